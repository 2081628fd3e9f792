//! The address guard (invariant 6): which URLs, hosts and addresses browsing may reach (the
//! browser's proxy and the guarded fetcher enforce it; config validates its exceptions).
//!
//! Every decision is made on a parsed [`url::Host`] or a resolved [`IpAddr`], never on a string, so
//! `127.1`, `0177.0.0.1`, `0x7f000001`, `2130706433` and `[::ffff:7f00:1]` are all the loopback
//! address they spell. Names are resolved here and every address is checked; callers connect to
//! exactly the addresses returned (no window for DNS rebinding).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;
use url::{Host, Url};

/// Longest wait for one name lookup.
const DNS_TIMEOUT: Duration = Duration::from_secs(5);

/// Why an address or a name is not reachable from the browser.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockReason {
    Loopback,
    /// RFC 1918 (10/8, 172.16/12, 192.168/16) and deprecated IPv6 site-local.
    Private,
    /// IPv6 unique local (fc00::/7).
    UniqueLocal,
    LinkLocal,
    /// 169.254.169.254, fd00:ec2::254, metadata.google.internal and the like.
    CloudMetadata,
    /// 100.64/10, shared by carrier-grade NAT.
    SharedAddressSpace,
    Multicast,
    Unspecified,
    Reserved,
    Documentation,
    Benchmarking,
    /// `*.local`, `*.internal`, `*.home.arpa`, single-label names: names of the local network.
    LocalName,
    /// The DevTools port of the browser itself: whoever reaches it controls the browser.
    BrowserControl,
}

impl fmt::Display for BlockReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Loopback => "a loopback address",
            Self::Private => "a private network address",
            Self::UniqueLocal => "a unique local (private) IPv6 address",
            Self::LinkLocal => "a link-local address",
            Self::CloudMetadata => "a cloud metadata endpoint",
            Self::SharedAddressSpace => "a carrier-grade NAT (shared) address",
            Self::Multicast => "a multicast address",
            Self::Unspecified => "an unspecified address",
            Self::Reserved => "a reserved address",
            Self::Documentation => "a documentation address",
            Self::Benchmarking => "a benchmarking address",
            Self::LocalName => "a local network name",
            Self::BrowserControl => "the browser's own control port",
        })
    }
}

/// Whether `ip` is an address browsing must never reach (`None` = public).
pub fn classify(ip: IpAddr) -> Option<BlockReason> {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(ip: Ipv4Addr) -> Option<BlockReason> {
    use BlockReason::*;
    let [a, b, c, _] = ip.octets();
    Some(match (a, b, c) {
        // Before the ranges that contain them.
        _ if ip == Ipv4Addr::new(169, 254, 169, 254) || ip == Ipv4Addr::new(100, 100, 100, 200) => CloudMetadata,
        (0, ..) => Unspecified,
        (10, ..) => Private,
        (100, 64..=127, _) => SharedAddressSpace,
        (127, ..) => Loopback,
        (169, 254, _) => LinkLocal,
        (172, 16..=31, _) => Private,
        (192, 0, 0) | (192, 88, 99) => Reserved,
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => Documentation,
        (192, 168, _) => Private,
        (198, 18..=19, _) => Benchmarking,
        (224..=239, ..) => Multicast,
        (240..=255, ..) => Reserved,
        _ => return None,
    })
}

fn classify_v6(ip: Ipv6Addr) -> Option<BlockReason> {
    use BlockReason::*;
    let s = ip.segments();
    let low_v4 = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    if ip == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254) {
        return Some(CloudMetadata);
    }
    if ip.is_unspecified() {
        return Some(Unspecified);
    }
    if ip.is_loopback() {
        return Some(Loopback);
    }
    // IPv4 inside IPv6: judged by the IPv4 address they carry.
    if let Some(v4) = ip.to_ipv4_mapped() {
        return classify_v4(v4); // ::ffff:a.b.c.d
    }
    if s[..6] == [0; 6] {
        return classify_v4(low_v4).or(Some(Reserved)); // deprecated IPv4-compatible ::a.b.c.d
    }
    if s[..4] == [0; 4] && s[4] == 0xffff && s[5] == 0 {
        return classify_v4(low_v4).or(Some(Reserved)); // IPv4-translated ::ffff:0:a.b.c.d
    }
    if s[0] == 0x64 && s[1] == 0xff9b {
        if s[2..6] == [0; 4] {
            return classify_v4(low_v4); // NAT64 well-known prefix 64:ff9b::/96
        }
        return Some(Private); // 64:ff9b:1::/48, local-use NAT64
    }
    if s[0] == 0x2002 {
        let v4 = Ipv4Addr::new((s[1] >> 8) as u8, s[1] as u8, (s[2] >> 8) as u8, s[2] as u8);
        return classify_v4(v4); // 6to4 2002:aabb:ccdd::/48
    }
    Some(match s[0] {
        0x2001 if s[1] == 0xdb8 => Documentation,
        0x3fff if s[1] < 0x1000 => Documentation, // 3fff::/20
        0x2001 if s[1] == 2 && s[2] == 0 => Benchmarking,
        0x2001 if s[1] < 0x200 => Reserved, // 2001::/23 IETF assignments, Teredo among them
        x if x & 0xfe00 == 0xfc00 => UniqueLocal,
        x if x & 0xffc0 == 0xfe80 => LinkLocal,
        x if x & 0xffc0 == 0xfec0 => Private, // deprecated site-local
        x if x & 0xff00 == 0xff00 => Multicast,
        x if x & 0xe000 != 0x2000 => Reserved, // outside 2000::/3, global unicast
        _ => return None,
    })
}

/// Names that mean the local network or a metadata service whatever they resolve to.
/// `name` is a parsed (lowercase, punycode) domain.
pub fn classify_name(name: &str) -> Option<BlockReason> {
    let name = name.trim_end_matches('.');
    if name == "localhost" || name.ends_with(".localhost") {
        return Some(BlockReason::Loopback);
    }
    if matches!(name, "metadata" | "metadata.google.internal" | "metadata.goog" | "instance-data.ec2.internal") {
        return Some(BlockReason::CloudMetadata);
    }
    let local_suffix = [".local", ".internal", ".home.arpa", ".localdomain", ".lan"];
    if !name.contains('.') || local_suffix.iter().any(|s| name.ends_with(s)) {
        return Some(BlockReason::LocalName);
    }
    None
}

/// A refusal, in words a chat reply can show.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("{scheme}: links cannot be opened (only http and https)")]
    Scheme { scheme: String },
    #[error("the link has no host")]
    NoHost,
    #[error("{} is {reason}", describe(host, *addr))]
    Blocked { host: String, addr: Option<IpAddr>, reason: BlockReason },
    #[error("{host} could not be resolved: {detail}")]
    Dns { host: String, detail: String },
}

fn describe(host: &str, addr: Option<IpAddr>) -> String {
    match addr {
        Some(ip) if ip.to_string() != host.trim_matches(['[', ']']) => format!("{host} ({ip})"),
        _ => host.to_owned(),
    }
}

/// One `browser.allow_hosts` entry: an exact host (name or IP), optionally with a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowHost {
    host: Host<String>,
    port: Option<u16>,
}

impl std::str::FromStr for AllowHost {
    type Err = String;

    /// `name`, `name:port`, `1.2.3.4`, `1.2.3.4:80`, `[::1]`, `[::1]:80` or a bare `::1`.
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let (host, port) = match s.rsplit_once(':') {
            // Two colons or more without brackets: a bare IPv6 address.
            Some((h, p)) if !h.contains(':') || h.ends_with(']') => (h, Some(p)),
            _ => (s, None),
        };
        let host = if host.contains(':') && !host.starts_with('[') { format!("[{host}]") } else { host.to_owned() };
        let host = Host::parse(&host).map_err(|e| format!("{s:?} is not a host name or IP address ({e})"))?;
        let port = port
            .map(|p| p.parse::<u16>().map_err(|_| format!("{s:?} has a port that is not a number from 0 to 65535")))
            .transpose()?;
        Ok(Self { host: canonical_host(host), port })
    }
}

/// IPv4-mapped IPv6 hosts as their IPv4 address, so one address has one spelling.
fn canonical_host(host: Host<String>) -> Host<String> {
    match host {
        Host::Ipv6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => Host::Ipv4(v4),
            None => Host::Ipv6(v6),
        },
        Host::Domain(d) => Host::Domain(d.trim_end_matches('.').to_owned()),
        other => other,
    }
}

fn host_label(host: &Host<String>) -> String {
    host.to_string()
}

/// The policy: blocked ranges and names, the configured exceptions, and addresses never reachable.
#[derive(Debug, Clone, Default)]
pub struct Guard {
    allow: Vec<AllowHost>,
    /// Never reachable, exceptions or not: the browser's DevTools endpoint.
    forbidden: Vec<SocketAddr>,
}

impl Guard {
    /// A guard with `browser.allow_hosts` as its exceptions.
    pub fn new(allow_hosts: &[String]) -> Result<Self, String> {
        let allow = allow_hosts.iter().map(|h| h.parse()).collect::<Result<_, _>>()?;
        Ok(Self { allow, forbidden: Vec::new() })
    }

    /// Also refuses `addr` (and, when it is loopback, its port on every loopback address).
    pub fn forbid(&mut self, addr: SocketAddr) {
        if !self.forbidden.contains(&addr) {
            self.forbidden.push(addr);
        }
    }

    /// Whether `host:port` is an exact `allow_hosts` exception.
    pub fn is_exempt(&self, host: &Host<String>, port: u16) -> bool {
        let host = canonical_host(host.clone());
        self.allow.iter().any(|a| a.host == host && a.port.is_none_or(|p| p == port))
    }

    /// The checks that need no lookup: the scheme, the host's spelling, IP literals, names of the
    /// local network. Returns the parsed host and port.
    pub fn check_url(&self, url: &Url) -> Result<(Host<String>, u16), Refusal> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Refusal::Scheme { scheme: url.scheme().to_owned() });
        }
        let host = url.host().ok_or(Refusal::NoHost)?.to_owned();
        let port = url.port_or_known_default().ok_or(Refusal::NoHost)?;
        self.check_host(&host, port)?;
        Ok((host, port))
    }

    fn check_host(&self, host: &Host<String>, port: u16) -> Result<(), Refusal> {
        let host = canonical_host(host.clone());
        if self.is_exempt(&host, port) {
            return Ok(());
        }
        let blocked = |addr, reason| Refusal::Blocked { host: host_label(&host), addr, reason };
        match &host {
            Host::Domain(name) => classify_name(name).map_or(Ok(()), |r| Err(blocked(None, r))),
            Host::Ipv4(v4) => classify_v4(*v4).map_or(Ok(()), |r| Err(blocked(Some(IpAddr::V4(*v4)), r))),
            Host::Ipv6(v6) => classify_v6(*v6).map_or(Ok(()), |r| Err(blocked(Some(IpAddr::V6(*v6)), r))),
        }
    }

    /// Resolves `host` and checks every address it has; the result is what to connect to.
    /// A name with any blocked address is refused whole: it points into a private network.
    pub async fn resolve(&self, host: &Host<String>, port: u16) -> Result<Vec<SocketAddr>, Refusal> {
        self.check_host(host, port)?;
        let host = canonical_host(host.clone());
        let exempt = self.is_exempt(&host, port);
        let addrs: Vec<SocketAddr> = match &host {
            Host::Ipv4(v4) => vec![SocketAddr::new(IpAddr::V4(*v4), port)],
            Host::Ipv6(v6) => vec![SocketAddr::new(IpAddr::V6(*v6), port)],
            Host::Domain(name) => lookup(name, port).await?,
        };
        let label = host_label(&host);
        for addr in &addrs {
            if self.is_forbidden(addr) {
                return Err(Refusal::Blocked {
                    host: label,
                    addr: Some(addr.ip()),
                    reason: BlockReason::BrowserControl,
                });
            }
            if !exempt && let Some(reason) = classify(addr.ip()) {
                return Err(Refusal::Blocked { host: label, addr: Some(addr.ip()), reason });
            }
        }
        Ok(addrs)
    }

    fn is_forbidden(&self, addr: &SocketAddr) -> bool {
        self.forbidden.iter().any(|f| {
            f.port() == addr.port() && (f.ip() == addr.ip() || f.ip().is_loopback() && addr.ip().is_loopback())
        })
    }
}

/// A name's addresses (IPv4-mapped ones as IPv4), bounded in time.
async fn lookup(name: &str, port: u16) -> Result<Vec<SocketAddr>, Refusal> {
    let dns = |detail: String| Refusal::Dns { host: name.to_owned(), detail };
    let found = tokio::time::timeout(DNS_TIMEOUT, tokio::net::lookup_host((name, port)))
        .await
        .map_err(|_| dns(format!("no answer within {DNS_TIMEOUT:?}")))?
        .map_err(|e| dns(e.to_string()))?;
    let mut addrs: Vec<SocketAddr> = Vec::new();
    for a in found {
        let a = SocketAddr::new(a.ip().to_canonical(), a.port());
        if !addrs.contains(&a) {
            addrs.push(a);
        }
    }
    if addrs.is_empty() {
        return Err(dns("no addresses".into()));
    }
    Ok(addrs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use BlockReason::*;

    #[test]
    fn addresses_are_classified_by_range() {
        let cases: &[(&str, Option<BlockReason>)] = &[
            ("127.0.0.1", Some(Loopback)),
            ("127.255.255.254", Some(Loopback)),
            ("10.0.0.1", Some(Private)),
            ("172.16.0.1", Some(Private)),
            ("172.31.255.255", Some(Private)),
            ("172.32.0.1", None),
            ("192.168.1.1", Some(Private)),
            ("169.254.1.1", Some(LinkLocal)),
            ("169.254.169.254", Some(CloudMetadata)),
            ("100.100.100.200", Some(CloudMetadata)),
            ("100.64.0.1", Some(SharedAddressSpace)),
            ("100.128.0.1", None),
            ("0.0.0.0", Some(Unspecified)),
            ("0.1.2.3", Some(Unspecified)),
            ("224.0.0.1", Some(Multicast)),
            ("239.255.255.250", Some(Multicast)),
            ("240.0.0.1", Some(Reserved)),
            ("255.255.255.255", Some(Reserved)),
            ("192.0.0.170", Some(Reserved)),
            ("192.0.2.1", Some(Documentation)),
            ("198.51.100.7", Some(Documentation)),
            ("203.0.113.9", Some(Documentation)),
            ("198.18.0.1", Some(Benchmarking)),
            ("198.19.255.1", Some(Benchmarking)),
            ("8.8.8.8", None),
            ("93.184.216.34", None),
            ("::", Some(Unspecified)),
            ("::1", Some(Loopback)),
            ("fe80::1", Some(LinkLocal)),
            ("fec0::1", Some(Private)),
            ("fc00::1", Some(UniqueLocal)),
            ("fd12:3456::1", Some(UniqueLocal)),
            ("fd00:ec2::254", Some(CloudMetadata)),
            ("ff02::1", Some(Multicast)),
            ("2001:db8::1", Some(Documentation)),
            ("3fff::1", Some(Documentation)),
            ("2001:2::1", Some(Benchmarking)),
            ("2001:0:4136:e378:8000:63bf:3fff:fdd2", Some(Reserved)), // Teredo
            ("100::1", Some(Reserved)),
            ("5f00::1", Some(Reserved)),
            ("2606:4700::1111", None),
            ("2a00:1450:4001::200e", None),
        ];
        for (ip, want) in cases {
            assert_eq!(classify(ip.parse().unwrap()), *want, "{ip}");
        }
    }

    #[test]
    fn ipv4_wrapped_in_ipv6_is_judged_by_the_ipv4_inside() {
        let cases: &[(&str, Option<BlockReason>)] = &[
            ("::ffff:127.0.0.1", Some(Loopback)),
            ("::ffff:7f00:1", Some(Loopback)),
            ("::ffff:10.1.2.3", Some(Private)),
            ("::ffff:169.254.169.254", Some(CloudMetadata)),
            ("::ffff:8.8.8.8", None),
            ("::127.0.0.1", Some(Loopback)),        // IPv4-compatible
            ("::8.8.8.8", Some(Reserved)),          // IPv4-compatible, deprecated either way
            ("::ffff:0:127.0.0.1", Some(Loopback)), // IPv4-translated
            ("64:ff9b::7f00:1", Some(Loopback)),    // NAT64
            ("64:ff9b::a9fe:a9fe", Some(CloudMetadata)),
            ("64:ff9b::808:808", None),
            ("64:ff9b:1::a00:1", Some(Private)), // local-use NAT64
            ("2002:7f00:1::1", Some(Loopback)),  // 6to4
            ("2002:c0a8:101::1", Some(Private)),
            ("2002:808:808::1", None),
        ];
        for (ip, want) in cases {
            assert_eq!(classify(ip.parse().unwrap()), *want, "{ip}");
        }
    }

    #[test]
    fn local_names_are_blocked_before_any_lookup() {
        let cases: &[(&str, Option<BlockReason>)] = &[
            ("localhost", Some(Loopback)),
            ("localhost.", Some(Loopback)),
            ("app.localhost", Some(Loopback)),
            ("metadata.google.internal", Some(CloudMetadata)),
            ("metadata", Some(CloudMetadata)),
            ("printer.local", Some(LocalName)),
            ("db.internal", Some(LocalName)),
            ("router", Some(LocalName)),
            ("example.org", None),
            ("localhost.example.org", None),
        ];
        for (name, want) in cases {
            assert_eq!(classify_name(name), *want, "{name}");
        }
    }

    fn url_check(guard: &Guard, url: &str) -> Result<(Host<String>, u16), Refusal> {
        guard.check_url(&Url::parse(url).unwrap())
    }

    #[test]
    fn every_spelling_of_loopback_is_loopback() {
        let guard = Guard::default();
        for url in [
            "http://127.0.0.1/",
            "http://127.1/",
            "http://0177.0.0.1/",
            "http://0x7f000001/",
            "http://0x7f.0.0.1/",
            "http://2130706433/",
            "http://017700000001/",
            "http://127.0.0.1./",
            "http://[::ffff:127.0.0.1]/",
            "http://[::ffff:7f00:1]/",
            "http://[::1]/",
            "http://[0:0:0:0:0:0:0:1]/",
            "http://LOCALHOST/",
            "http://localhost:8080/",
            "https://127.0.0.1:443/",
        ] {
            match url_check(&guard, url) {
                Err(Refusal::Blocked { reason: Loopback, .. }) => {}
                other => panic!("{url}: {other:?}"),
            }
        }
    }

    #[test]
    fn only_http_and_https_pass() {
        let guard = Guard::default();
        for url in [
            "file:///etc/passwd",
            "chrome://settings",
            "view-source:http://example.org/",
            "ftp://example.org/",
            "data:text/html,hi",
            "javascript:alert(1)",
            "ws://example.org/",
            "blob:http://example.org/x",
        ] {
            assert!(matches!(url_check(&guard, url), Err(Refusal::Scheme { .. })), "{url}");
        }
        assert_eq!(url_check(&guard, "https://example.org/a").unwrap().1, 443);
        assert_eq!(url_check(&guard, "http://example.org:8080/").unwrap().1, 8080);
    }

    #[test]
    fn allow_hosts_are_exact_hosts_with_an_optional_port() {
        let guard =
            Guard::new(&["127.0.0.2".into(), "intranet.example:8443".into(), "[::1]:8080".into(), "fd00::5".into()])
                .unwrap();
        let ok = |u: &str| url_check(&guard, u).is_ok();
        assert!(ok("http://127.0.0.2:1234/"));
        assert!(ok("http://[::ffff:127.0.0.2]:99/"), "one address, one spelling");
        assert!(!ok("http://127.0.0.3/"));
        assert!(ok("https://intranet.example:8443/"));
        assert!(ok("https://INTRANET.example:8443/"));
        assert!(ok("http://[::1]:8080/"));
        assert!(!ok("http://[::1]:8081/"));
        assert!(ok("http://[fd00::5]/"));
        // Exact: a subdomain is another host; the port of the entry is the only one.
        let g2 = Guard::new(&["intranet.example:8443".into(), "lab".into()]).unwrap();
        assert!(g2.is_exempt(&Host::Domain("intranet.example".into()), 8443));
        assert!(!g2.is_exempt(&Host::Domain("intranet.example".into()), 443));
        assert!(!g2.is_exempt(&Host::Domain("a.intranet.example".into()), 8443));
        assert!(url_check(&g2, "http://lab/").is_ok());
        for bad in ["", "a b", "host:port", "host:70000"] {
            assert!(Guard::new(&[bad.into()]).is_err(), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn resolution_checks_every_address_and_pins_them() {
        let guard = Guard::default();
        let host = Host::Domain("localhost".into());
        assert!(matches!(guard.resolve(&host, 80).await, Err(Refusal::Blocked { reason: Loopback, .. })));
        // Exempt by name: the lookup's loopback addresses are what is returned.
        let guard = Guard::new(&["localhost".into()]).unwrap();
        let addrs = guard.resolve(&host, 80).await.unwrap();
        assert!(!addrs.is_empty() && addrs.iter().all(|a| a.ip().is_loopback() && a.port() == 80), "{addrs:?}");
        // (No lookup of a missing name here: that would query this machine's DNS server.)
    }

    #[tokio::test]
    async fn the_browsers_control_port_is_refused_even_when_allowed() {
        let mut guard = Guard::new(&["127.0.0.1".into()]).unwrap();
        guard.forbid("127.0.0.1:9222".parse().unwrap());
        let h = Host::Ipv4(Ipv4Addr::LOCALHOST);
        assert!(guard.resolve(&h, 8080).await.is_ok());
        let err = guard.resolve(&h, 9222).await.unwrap_err();
        assert!(matches!(err, Refusal::Blocked { reason: BrowserControl, .. }), "{err:?}");
        let guard2 = {
            let mut g = Guard::new(&["127.0.0.2".into()]).unwrap();
            g.forbid("127.0.0.1:9222".parse().unwrap());
            g
        };
        let err = guard2.resolve(&Host::Ipv4(Ipv4Addr::new(127, 0, 0, 2)), 9222).await.unwrap_err();
        assert!(matches!(err, Refusal::Blocked { reason: BrowserControl, .. }), "{err:?}");
    }

    #[test]
    fn refusals_read_as_sentences() {
        let r =
            Refusal::Blocked { host: "evil.example".into(), addr: Some("10.0.0.1".parse().unwrap()), reason: Private };
        assert_eq!(r.to_string(), "evil.example (10.0.0.1) is a private network address");
        let r =
            Refusal::Blocked { host: "127.0.0.1".into(), addr: Some("127.0.0.1".parse().unwrap()), reason: Loopback };
        assert_eq!(r.to_string(), "127.0.0.1 is a loopback address");
        assert_eq!(
            Refusal::Scheme { scheme: "file".into() }.to_string(),
            "file: links cannot be opened (only http and https)"
        );
    }
}
