//! The invoice archive's rules, without I/O: which invoice links may be fetched (the URL comes from a request
//! body, so it is untrusted), which addresses a fetch may reach, what counts as a PDF, where an archived PDF
//! lives in the bucket, and how an archive attempt ended.
//!
//! Komet's invoice links die six hours after the webhook, so reconcile copies each PDF into the stack's bucket
//! before it upserts the PO. An invoice that cannot be archived never holds its PO back: the outcome says why,
//! and AppZen's `custom_json` and the e-mails carry that note.

use serde::{Deserialize, Serialize};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Komet's own domain: the default `INVOICE_HOSTS`.
pub const DEFAULT_INVOICE_HOSTS: &str = "kometsales.com";

/// One entry of `INVOICE_HOSTS`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostRule {
    /// A domain: the host itself and its subdomains (`kometsales.com` allows `files.kometsales.com`), over
    /// HTTPS only, and only where every address it resolves to is public.
    Domain(String),
    /// An IP address named exactly, for a local test server (the AppZen sandbox): plain HTTP allowed, and the
    /// address may be loopback. The stack's template never sets one; its test pins that.
    Address(IpAddr),
}

/// Which invoice links may be fetched, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchPolicy {
    pub hosts: Vec<HostRule>,
    /// The largest PDF accepted (`INVOICE_MAX_BYTES`).
    pub max_bytes: usize,
}

impl FetchPolicy {
    /// Parses `INVOICE_HOSTS`: comma-separated domains or IP addresses.
    pub fn parse_hosts(value: &str) -> Result<Vec<HostRule>, String> {
        let mut rules = Vec::new();
        for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let entry = entry.trim_start_matches("*.").trim_end_matches('.').to_ascii_lowercase();
            let literal = entry.trim_start_matches('[').trim_end_matches(']');
            if let Ok(ip) = literal.parse::<IpAddr>() {
                rules.push(HostRule::Address(ip));
            } else if entry.contains('.')
                && entry.split('.').all(|label| {
                    !label.is_empty()
                        && label.len() <= 63
                        && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                })
            {
                rules.push(HostRule::Domain(entry));
            } else {
                return Err(format!("{entry:?} is neither a domain such as kometsales.com nor an IP address"));
            }
        }
        if rules.is_empty() {
            return Err("names no host".to_owned());
        }
        Ok(rules)
    }

    /// Whether `url` may be fetched: an absolute `https` URL on an allowed domain, or a URL on an allowed IP
    /// address. Applied to the invoice link and to every redirect.
    pub fn check_url(&self, url: &url::Url) -> Result<(), NotArchived> {
        let refuse = |why: String| Err(NotArchived::Refused(why));
        let host = match url.host() {
            Some(url::Host::Domain(domain)) => Host::Domain(domain.trim_end_matches('.').to_ascii_lowercase()),
            Some(url::Host::Ipv4(ip)) => Host::Address(IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => Host::Address(IpAddr::V6(ip)),
            None => return refuse("the link has no host".to_owned()),
        };
        if !url.username().is_empty() || url.password().is_some() {
            return refuse("the link carries credentials".to_owned());
        }
        match host {
            Host::Domain(domain) => {
                if url.scheme() != "https" {
                    return refuse(format!("only https links are fetched, found {}://", url.scheme()));
                }
                let allowed = self.hosts.iter().any(|rule| match rule {
                    HostRule::Domain(allowed) => {
                        domain == *allowed
                            || domain.strip_suffix(allowed.as_str()).is_some_and(|rest| rest.ends_with('.'))
                    }
                    HostRule::Address(_) => false,
                });
                if !allowed {
                    return refuse(format!("host {domain} is not on the invoice host allow-list (INVOICE_HOSTS)"));
                }
            }
            Host::Address(ip) => {
                if !matches!(url.scheme(), "https" | "http") {
                    return refuse(format!("only http(s) links are fetched, found {}://", url.scheme()));
                }
                if !self.hosts.contains(&HostRule::Address(ip)) {
                    return refuse(format!("address {ip} is not on the invoice host allow-list (INVOICE_HOSTS)"));
                }
            }
        }
        Ok(())
    }

    /// Reads an invoice link as Komet writes it (`www.kometsales.com/url` is `https://www.kometsales.com/url`, see
    /// [`invoice_link`]); the reason when it is not a URL that may be fetched.
    pub fn parse_link(&self, link: &str) -> Result<url::Url, NotArchived> {
        let not_a_url =
            || NotArchived::Refused(format!("{:?} is not an absolute URL", crate::text::one_line(link, 80)));
        let link = invoice_link(link).map_err(|refusal| match refusal {
            LinkRefusal::Scheme(scheme) => NotArchived::Refused(format!(
                "only https links are fetched, found {}:",
                crate::text::one_line(scheme, 20)
            )),
            LinkRefusal::NotAUrl => not_a_url(),
        })?;
        let url = url::Url::parse(&link).map_err(|_| not_a_url())?;
        self.check_url(&url)?;
        Ok(url)
    }

    /// Whether a resolved address may be connected to for `host`: public addresses always; others only when
    /// that exact address is on the allow-list (a name that resolves to a private address is refused, so a
    /// DNS answer cannot turn the fetch against the function's own network).
    pub fn address_allowed(&self, ip: IpAddr) -> bool {
        is_public(ip) || self.hosts.contains(&HostRule::Address(ip))
    }
}

enum Host {
    Domain(String),
    Address(IpAddr),
}

/// Why a `file` is not an invoice link.
pub enum LinkRefusal<'t> {
    NotAUrl,
    Scheme(&'t str),
}

/// An invoice link: kept when http(s), given `https://` when Komet omits the scheme, refused otherwise (it
/// ends up as a link in an e-mail). Read in place and allocated once, at its final size.
pub fn invoice_link(text: &str) -> Result<String, LinkRefusal<'_>> {
    let text = text.trim();
    let has_scheme = |scheme: &str| text.get(..scheme.len()).is_some_and(|start| start.eq_ignore_ascii_case(scheme));
    if has_scheme("https://") || has_scheme("http://") {
        Ok(text.into())
    } else if text.is_empty() || text.contains(char::is_whitespace) {
        Err(LinkRefusal::NotAUrl)
    } else if let Some((scheme, _)) = text.split_once(':').filter(|(scheme, _)| !scheme.contains(['/', '.'])) {
        Err(LinkRefusal::Scheme(scheme))
    } else {
        let mut link = String::with_capacity("https://".len() + text.len());
        link.push_str("https://");
        link.push_str(text);
        Ok(link)
    }
}

/// Whether an address is on the public internet: not loopback, private, link-local (169.254/16, where cloud
/// metadata lives), carrier-grade NAT, unspecified, broadcast, multicast, documentation or unique-local.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_public_v4(v4),
            None => is_public_v6(v6),
        },
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    !(ip.is_private()
        || ip.is_loopback()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // carrier-grade NAT, 100.64.0.0/10
        || (a == 192 && b == 0 && ip.octets()[2] == 0) // IETF protocol assignments
        || (a == 198 && (18..20).contains(&b)) // benchmarking, 198.18.0.0/15
        || a >= 240) // reserved
}

/// An IPv6 address that carries an IPv4 one (NAT64, 6to4, Teredo, IPv4-compatible) is not public either: a
/// translator or tunnel could deliver it to any IPv4 address, the private ones included.
fn is_public_v6(ip: Ipv6Addr) -> bool {
    let [first, second, ..] = ip.segments();
    !(ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00 // unique local fc00::/7
        || (first & 0xffc0) == 0xfe80 // link-local fe80::/10
        || (first & 0xffc0) == 0xfec0 // site-local fec0::/10 (deprecated, still routed by some)
        || first == 0x2001 && second == 0x0db8 // documentation
        || first == 0x0064 && second == 0xff9b // NAT64 64:ff9b::/96 and local-use 64:ff9b:1::/48
        || first == 0x2002 // 6to4 2002::/16
        || first == 0x2001 && second == 0x0000 // Teredo 2001::/32
        || ip.segments()[..6] == [0; 6]) // IPv4-compatible ::a.b.c.d
}

/// Whether bytes are a PDF: the `%PDF-` header within the first 1024 bytes, as PDF readers accept it. A
/// Content-Type header alone proves nothing.
pub fn is_pdf(bytes: &[u8]) -> bool {
    let head = &bytes[..bytes.len().min(1024)];
    head.windows(5).any(|w| w == b"%PDF-")
}

/// Where an invoice's PDF lives in the bucket: `invoices/<PO id>/<invoice number>/<sha256>.pdf`. Named by
/// content, so re-running the same PO finds the object already there and does not upload it again, and a
/// corrected PDF is kept next to the first.
pub fn invoice_key(po_id: u64, invoice_number: &str, sha256: &str) -> String {
    format!("invoices/{po_id}/{}/{sha256}.pdf", key_segment(invoice_number))
}

/// A key segment from a Komet value: letters, digits, `.`, `_` and `-` kept, anything else `_`, at most 100
/// characters, never `.` or `..`.
fn key_segment(value: &str) -> String {
    let cleaned: String = value
        .trim()
        .chars()
        .take(100)
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') { c } else { '_' })
        .collect();
    match cleaned.as_str() {
        "" | "." | ".." => "_".to_owned(),
        _ => cleaned,
    }
}

/// Why an invoice was not archived.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(rename_all = "snake_case", tag = "kind", content = "reason")]
pub enum NotArchived {
    /// The link may not be fetched (not https, a host off the allow-list, a private address): not retried.
    #[error("{0}")]
    Refused(String),
    /// The link is gone (403/404/410, as Komet's expired links answer) or answered another refusal: not retried.
    #[error("{0}")]
    Gone(String),
    /// What came back is not a PDF, or is larger than allowed: not retried.
    #[error("{0}")]
    NotAPdf(String),
    /// Kept failing transiently (timeouts, 5xx, DNS) within the invocation's budget.
    #[error("{0}")]
    Unavailable(String),
}

impl NotArchived {
    /// Whether trying again later might work.
    pub fn is_transient(&self) -> bool {
        matches!(self, NotArchived::Unavailable(_))
    }
}

/// An invoice PDF kept in the bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArchivedPdf {
    pub bucket: String,
    pub key: String,
    pub sha256: String,
    pub bytes: u64,
}

impl ArchivedPdf {
    /// `s3://bucket/key`.
    pub fn location(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.key)
    }
}

/// How archiving one invoice ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvoiceArchive {
    pub invoice_number: String,
    pub outcome: Result<ArchivedPdf, NotArchived>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(hosts: &str) -> FetchPolicy {
        FetchPolicy { hosts: FetchPolicy::parse_hosts(hosts).unwrap(), max_bytes: 1 << 20 }
    }

    fn check(policy: &FetchPolicy, link: &str) -> Result<(), String> {
        policy.parse_link(link).map(|_| ()).map_err(|e| e.to_string())
    }

    #[test]
    fn only_https_links_on_the_allowed_domains_are_fetched() {
        let komet = policy(DEFAULT_INVOICE_HOSTS);
        assert_eq!(check(&komet, "https://kometsales.com/i/1.pdf"), Ok(()));
        assert_eq!(check(&komet, "https://files.kometsales.com/invoices/01-P004410.pdf"), Ok(()));
        assert_eq!(check(&komet, "HTTPS://FILES.KometSales.com./x"), Ok(()));
        // Komet's own documented sample sends a link without a scheme: read as https, as the reader reads it.
        assert_eq!(komet.parse_link("www.kometsales.com/url").unwrap().as_str(), "https://www.kometsales.com/url");
        for (link, why) in [
            ("http://files.kometsales.com/x.pdf", "only https links are fetched, found http://"),
            ("https://evilkometsales.com/x.pdf", "host evilkometsales.com is not on the invoice host allow-list"),
            ("https://kometsales.com.evil.example/x", "host kometsales.com.evil.example is not on the invoice host"),
            ("https://169.254.169.254/latest/meta-data/", "address 169.254.169.254 is not on the invoice host"),
            ("https://user:pw@files.kometsales.com/x", "the link carries credentials"),
            ("file:///etc/passwd", "only https links are fetched, found file:"),
            ("www.evil.example/url", "host www.evil.example is not on the invoice host allow-list"),
        ] {
            let found = check(&komet, link).unwrap_err();
            assert!(found.starts_with(why), "{link}: {found}");
        }
    }

    #[test]
    fn an_address_on_the_list_is_allowed_exactly_with_http() {
        let local = policy("127.0.0.1, kometsales.com");
        assert_eq!(check(&local, "http://127.0.0.1:8080/invoices/1.pdf"), Ok(()));
        assert!(check(&local, "http://127.0.0.2/x").is_err());
        assert!(check(&local, "http://localhost/x").unwrap_err().contains("only https"));
        assert!(local.address_allowed("127.0.0.1".parse().unwrap()));
        assert!(!local.address_allowed("10.0.0.7".parse().unwrap()));
    }

    #[test]
    fn private_loopback_link_local_and_reserved_addresses_are_not_public() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "192.0.2.10",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "2001:db8::1",
            "198.18.0.1",
            "198.19.255.254",
            "100.127.255.254",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b:1::10.0.0.1",
            "2002:a9fe:a9fe::1",
            "2001:0:a9fe:a9fe::1",
            "::169.254.169.254",
            "::10.0.0.1",
            "fec0::1",
            "feff::1",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in
            ["52.94.236.248", "8.8.8.8", "198.20.0.1", "100.128.0.1", "2606:4700:4700::1111", "::ffff:52.94.236.248"]
        {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }

    #[test]
    fn hosts_are_parsed_with_errors_that_say_what_is_wrong() {
        assert_eq!(
            FetchPolicy::parse_hosts(" *.KometSales.com , 127.0.0.1,[::1]").unwrap(),
            vec![
                HostRule::Domain("kometsales.com".into()),
                HostRule::Address("127.0.0.1".parse().unwrap()),
                HostRule::Address("::1".parse().unwrap())
            ]
        );
        assert_eq!(FetchPolicy::parse_hosts(" , ").unwrap_err(), "names no host");
        assert!(FetchPolicy::parse_hosts("localhost").unwrap_err().contains("\"localhost\" is neither"));
        assert!(FetchPolicy::parse_hosts("https://kometsales.com").is_err());
    }

    #[test]
    fn a_pdf_is_recognised_by_its_bytes() {
        assert!(is_pdf(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj"));
        assert!(is_pdf(b"\xef\xbb\xbf  %PDF-1.4"), "leading junk within 1024 bytes, as readers accept");
        assert!(!is_pdf(b"<html><body>Your link has expired</body></html>"));
        assert!(!is_pdf(&[b' '; 2000].iter().chain(b"%PDF-1.4").copied().collect::<Vec<_>>()));
        assert!(!is_pdf(b""));
    }

    #[test]
    fn keys_say_what_they_hold_and_cannot_escape_their_prefix() {
        assert_eq!(invoice_key(48213, "01-P004410", "ab12"), "invoices/48213/01-P004410/ab12.pdf");
        assert_eq!(invoice_key(1, "../../etc/passwd", "s"), "invoices/1/.._.._etc_passwd/s.pdf");
        assert_eq!(invoice_key(1, "..", "s"), "invoices/1/_/s.pdf");
        assert_eq!(invoice_key(1, "  A/B ü ", "s"), "invoices/1/A_B__/s.pdf");
        assert_eq!(invoice_key(1, &"x".repeat(500), "s").len(), "invoices/1//s.pdf".len() + 100);
    }
}
