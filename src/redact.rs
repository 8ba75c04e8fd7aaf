//! Store URLs made fit for logs and messages: the password never leaves the process in a
//! string this crate builds.

/// `url` with its passwords replaced by `***`, for a log line or an error message.
///
/// Every user information part is masked: the authority's and any in the query (a cluster URL's
/// `node=` list). The user name stays, since it helps tell deployments apart; user information
/// without a `:` is masked whole, as it may be a password written without its user.
///
/// ```
/// use tower_response_cache::redact_url;
/// assert_eq!(redact_url("redis://app:s3cret@cache:6379/0"), "redis://app:***@cache:6379/0");
/// assert_eq!(redact_url("redis://:s3cret@cache:6379/0"), "redis://:***@cache:6379/0");
/// assert_eq!(redact_url("redis://s3cret@cache"), "redis://***@cache");
/// assert_eq!(redact_url("redis://cache:6379/0"), "redis://cache:6379/0");
/// assert_eq!(redact_url("memory"), "memory");
/// ```
#[must_use]
pub fn redact_url(url: &str) -> String {
    let Some((scheme, mut rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let mut out = format!("{scheme}://");
    while let Some(at) = rest.find('@') {
        // The user information runs back from `@` to the start of its component.
        let start = rest[..at]
            .rfind(['/', '?', '&', '=', '#'])
            .map_or(0, |i| i + 1);
        out.push_str(&rest[..start]);
        match rest[start..at].split_once(':') {
            Some((user, _)) => {
                out.push_str(user);
                out.push_str(":***@");
            }
            None => out.push_str("***@"),
        }
        rest = &rest[at + 1..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn passwords_in_a_cluster_node_list_are_masked_too() {
        assert_eq!(
            redact_url("redis-cluster://h:7000?node=u:pw@h2:7001&node=h3:7002"),
            "redis-cluster://h:7000?node=u:***@h2:7001&node=h3:7002"
        );
        assert_eq!(
            redact_url("redis-cluster://u:pw@h:7000?node=h2:7001"),
            "redis-cluster://u:***@h:7000?node=h2:7001"
        );
    }
}
