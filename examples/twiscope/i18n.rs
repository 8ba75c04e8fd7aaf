//! Language negotiation (`Accept-Language` with q-values) and the labels of the stats page in
//! each language we speak.

/// The languages the stats labels exist in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lang {
    En,
    Es,
    Fr,
    De,
}

/// The labels of `/platforms/{platform}/stats` in one language.
#[derive(Debug)]
pub(crate) struct Labels {
    pub(crate) title: fn(&str) -> String,
    pub(crate) influencers: &'static str,
    pub(crate) followers: &'static str,
    pub(crate) posts: &'static str,
    pub(crate) engagement: &'static str,
    pub(crate) engagement_per_post: &'static str,
    pub(crate) top_hashtags: &'static str,
}

const EN: Labels = Labels {
    title: |p| format!("{p} statistics"),
    influencers: "Influencers",
    followers: "Total followers",
    posts: "Posts",
    engagement: "Total engagement",
    engagement_per_post: "Average engagement per post",
    top_hashtags: "Top hashtags",
};
const ES: Labels = Labels {
    title: |p| format!("Estadísticas de {p}"),
    influencers: "Influencers",
    followers: "Seguidores totales",
    posts: "Publicaciones",
    engagement: "Interacción total",
    engagement_per_post: "Interacción media por publicación",
    top_hashtags: "Hashtags principales",
};
const FR: Labels = Labels {
    title: |p| format!("Statistiques de {p}"),
    influencers: "Influenceurs",
    followers: "Abonnés au total",
    posts: "Publications",
    engagement: "Engagement total",
    engagement_per_post: "Engagement moyen par publication",
    top_hashtags: "Hashtags les plus utilisés",
};
const DE: Labels = Labels {
    title: |p| format!("{p}-Statistiken"),
    influencers: "Influencer",
    followers: "Follower insgesamt",
    posts: "Beiträge",
    engagement: "Interaktionen insgesamt",
    engagement_per_post: "Durchschnittliche Interaktionen pro Beitrag",
    top_hashtags: "Top-Hashtags",
};

impl Lang {
    const ALL: [Lang; 4] = [Lang::En, Lang::Es, Lang::Fr, Lang::De];

    /// The BCP 47 tag, as sent in `Content-Language`.
    pub(crate) fn tag(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::Es => "es",
            Lang::Fr => "fr",
            Lang::De => "de",
        }
    }

    pub(crate) fn labels(self) -> &'static Labels {
        match self {
            Lang::En => &EN,
            Lang::Es => &ES,
            Lang::Fr => &FR,
            Lang::De => &DE,
        }
    }

    /// The best language for an `Accept-Language` value: the highest q-value among the ranges
    /// we speak (`es-MX` matches `es`, `*` matches English), the earlier range on a tie, and
    /// English when nothing matches or the header is absent or malformed.
    pub(crate) fn negotiate(accept_language: Option<&str>) -> Lang {
        let Some(header) = accept_language else {
            return Lang::En;
        };
        let mut best: Option<(u16, Lang)> = None;
        for item in header.split(',') {
            let mut parts = item.split(';');
            let range = parts.next().unwrap_or("").trim();
            let Some(q) = parts.try_fold(1000, |q, param| match param.trim().split_once('=') {
                Some((name, value)) if name.trim().eq_ignore_ascii_case("q") => {
                    parse_q(value.trim())
                }
                _ => Some(q),
            }) else {
                continue;
            };
            let primary = range.split('-').next().unwrap_or("");
            let lang = if range == "*" {
                Some(Lang::En)
            } else {
                Lang::ALL
                    .into_iter()
                    .find(|l| l.tag().eq_ignore_ascii_case(primary))
            };
            if let Some(lang) = lang {
                if q > 0 && best.is_none_or(|(best_q, _)| q > best_q) {
                    best = Some((q, lang));
                }
            }
        }
        best.map_or(Lang::En, |(_, lang)| lang)
    }
}

/// An RFC 9110 qvalue (`0`, `0.5`, `1.000`) in thousandths; `None` if malformed.
fn parse_q(value: &str) -> Option<u16> {
    let (int, frac) = value.split_once('.').unwrap_or((value, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let thousandths: u16 = format!("{frac:0<3}").parse().ok()?;
    match int {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiates_with_q_values() {
        assert_eq!(Lang::negotiate(None), Lang::En);
        assert_eq!(Lang::negotiate(Some("es")), Lang::Es);
        assert_eq!(Lang::negotiate(Some("fr-CH, fr;q=0.9, en;q=0.8")), Lang::Fr);
        assert_eq!(Lang::negotiate(Some("en;q=0.5, es-MX;q=0.9")), Lang::Es);
        assert_eq!(Lang::negotiate(Some("ja, de;q=0.1")), Lang::De);
        assert_eq!(Lang::negotiate(Some("ja, zh")), Lang::En);
        assert_eq!(Lang::negotiate(Some("fr;q=0, *;q=0.1")), Lang::En);
        assert_eq!(Lang::negotiate(Some("fr;q=abc, es;q=0.2")), Lang::Es);
        assert_eq!(Lang::negotiate(Some("FR;Q=1.0")), Lang::Fr);
    }

    #[test]
    fn parses_q() {
        assert_eq!(parse_q("0.5"), Some(500));
        assert_eq!(parse_q("1"), Some(1000));
        assert_eq!(parse_q("0.123"), Some(123));
        assert_eq!(parse_q("1.5"), None);
        assert_eq!(parse_q("0.1234"), None);
    }
}
