//! The fence around every URL a tenant gives qlaud: what a URL may look
//! like (https, no userinfo, a host), and which addresses qlaud may connect
//! to. Addresses are checked twice: literal IPs in the URL before sending,
//! and every address a name resolves to inside the HTTP client's resolver,
//! at connect time, so a name that answers one address when the URL is
//! saved and another (127.0.0.1, 169.254.169.254) when qlaud connects — DNS
//! rebinding — is refused too.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use futures::future::BoxFuture;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use url::{Host, Url};

/// The longest URL a tenant may give.
pub const MAX_URL_LEN: usize = 2048;

/// What the operator allows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    /// `--allow-private-webhooks`: plain http, and loopback, private,
    /// link-local and shared (CGNAT) addresses, for local development and
    /// tests. Cloud metadata addresses, multicast, broadcast, unspecified,
    /// documentation and reserved ranges stay refused: nothing legitimate
    /// listens there.
    pub allow_private: bool,
}

/// Why the fence refused a URL or an address. Its text is shown to the
/// tenant (it names only what the tenant gave, or what it resolved to).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

/// Where an address points.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Class {
    Public,
    /// Refused unless the operator allows private targets.
    Private(&'static str),
    /// Refused always.
    Never(&'static str),
}

impl Policy {
    /// Checks a URL's form, and its host when it is a literal address.
    /// Names are checked when they are resolved, at connect time.
    pub fn check_url(&self, raw: &str) -> Result<Url, Refused> {
        if raw.len() > MAX_URL_LEN {
            return Err(Refused(format!("the URL is longer than {MAX_URL_LEN} characters")));
        }
        let mut url =
            Url::parse(raw).map_err(|e| Refused(format!("{raw:?} is not a valid URL: {e}")))?;
        match url.scheme() {
            "https" => {}
            "http" if self.allow_private => {}
            "http" => {
                return Err(Refused(
                    "the URL must use https (plain http only with --allow-private-webhooks)".into(),
                ));
            }
            other => return Err(Refused(format!("the URL must use https, not {other}"))),
        }
        // `user@host` would send credentials along (and is a classic way to
        // disguise the real host: http://127.0.0.1@169.254.169.254/).
        if !url.username().is_empty() || url.password().is_some() {
            return Err(Refused("the URL must not contain a user name or password".into()));
        }
        match url.host() {
            None => return Err(Refused("the URL has no host".into())),
            Some(Host::Ipv4(ip)) => self.check_ip(IpAddr::V4(ip))?,
            Some(Host::Ipv6(ip)) => self.check_ip(IpAddr::V6(ip))?,
            Some(Host::Domain(name)) => {
                let name = name.trim_end_matches('.').to_ascii_lowercase();
                if let Ok(ip) = name.parse::<IpAddr>() {
                    self.check_ip(ip)?;
                }
                // RFC 6761: these always mean this machine.
                let local = name == "localhost" || name.ends_with(".localhost");
                if local && !self.allow_private {
                    return Err(Refused(format!(
                        "{name} is the local host; only public addresses are allowed"
                    )));
                }
            }
        }
        // A fragment never leaves qlaud anyway.
        url.set_fragment(None);
        Ok(url)
    }

    /// Whether qlaud may connect to `ip`.
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), Refused> {
        match classify(ip) {
            Class::Public => Ok(()),
            Class::Private(_) if self.allow_private => Ok(()),
            Class::Private(what) => Err(Refused(format!(
                "{ip} is {what}; only public addresses are allowed (the operator can allow \
                 private ones with --allow-private-webhooks)"
            ))),
            Class::Never(what) => Err(Refused(format!("{ip} is {what}"))),
        }
    }
}

fn in_v4(ip: Ipv4Addr, net: [u8; 4], len: u32) -> bool {
    let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
    u32::from(ip) & mask == u32::from(Ipv4Addr::from(net)) & mask
}

fn in_v6(ip: Ipv6Addr, net: [u16; 8], len: u32) -> bool {
    let mask = u128::MAX.checked_shl(128 - len).unwrap_or(0);
    u128::from(ip) & mask == u128::from(Ipv6Addr::from(net)) & mask
}

fn classify(ip: IpAddr) -> Class {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(ip: Ipv4Addr) -> Class {
    use Class::*;
    // Cloud instance metadata (AWS, GCP, Azure, ECS, EKS; Alibaba's sits in
    // the shared range): credentials live there, so never, flag or not.
    const METADATA: [[u8; 4]; 4] =
        [[169, 254, 169, 254], [169, 254, 170, 2], [169, 254, 170, 23], [100, 100, 100, 200]];
    if METADATA.contains(&ip.octets()) {
        return Never("a cloud metadata address");
    }
    let table: [([u8; 4], u32, Class); 16] = [
        ([0, 0, 0, 0], 8, Never("an unspecified (\"this network\") address")),
        ([255, 255, 255, 255], 32, Never("the broadcast address")),
        ([224, 0, 0, 0], 4, Never("a multicast address")),
        ([240, 0, 0, 0], 4, Never("a reserved address")),
        ([192, 0, 0, 0], 24, Never("an IETF protocol assignment address")),
        ([192, 0, 2, 0], 24, Never("a documentation address")),
        ([198, 51, 100, 0], 24, Never("a documentation address")),
        ([203, 0, 113, 0], 24, Never("a documentation address")),
        ([198, 18, 0, 0], 15, Never("a benchmarking address")),
        ([192, 88, 99, 0], 24, Never("a 6to4 relay address")),
        ([127, 0, 0, 0], 8, Private("a loopback address")),
        ([10, 0, 0, 0], 8, Private("a private address")),
        ([172, 16, 0, 0], 12, Private("a private address")),
        ([192, 168, 0, 0], 16, Private("a private address")),
        ([169, 254, 0, 0], 16, Private("a link-local address")),
        ([100, 64, 0, 0], 10, Private("a shared (CGNAT) address")),
    ];
    table.iter().find(|(net, len, _)| in_v4(ip, *net, *len)).map_or(Public, |(_, _, c)| *c)
}

fn classify_v6(ip: Ipv6Addr) -> Class {
    use Class::*;
    // An IPv4 address in IPv6 clothing is judged as the IPv4 address.
    if let Some(v4) = ip.to_ipv4_mapped() {
        return classify_v4(v4);
    }
    let embedded = |bits_from: u32| {
        let v4 = (u128::from(ip) >> (128 - bits_from - 32)) as u32;
        classify_v4(Ipv4Addr::from(v4))
    };
    const METADATA: [Ipv6Addr; 2] = [
        Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254),
        Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x23),
    ];
    if METADATA.contains(&ip) {
        return Never("a cloud metadata address");
    }
    if ip.is_unspecified() {
        return Never("the unspecified address");
    }
    if ip.is_loopback() {
        return Private("a loopback address");
    }
    // NAT64 (RFC 6052) and 6to4 (RFC 3056) reach the IPv4 address inside.
    if in_v6(ip, [0x64, 0xff9b, 0, 0, 0, 0, 0, 0], 96) {
        return embedded(96);
    }
    if in_v6(ip, [0x2002, 0, 0, 0, 0, 0, 0, 0], 16) {
        return embedded(16);
    }
    let table: [([u16; 8], u32, Class); 13] = [
        ([0, 0, 0, 0, 0, 0, 0, 0], 96, Never("an IPv4-compatible (deprecated) address")),
        ([0x64, 0xff9b, 1, 0, 0, 0, 0, 0], 48, Private("a local-use NAT64 address")),
        ([0x100, 0, 0, 0, 0, 0, 0, 0], 64, Never("a discard-only address")),
        ([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32, Never("a documentation address")),
        ([0x3fff, 0, 0, 0, 0, 0, 0, 0], 20, Never("a documentation address")),
        ([0x2001, 0, 0, 0, 0, 0, 0, 0], 32, Never("a Teredo address")),
        ([0x2001, 0, 0, 0, 0, 0, 0, 0], 23, Never("an IETF protocol assignment address")),
        ([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10, Private("a link-local address")),
        ([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10, Private("a site-local address")),
        ([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7, Private("a unique local (private) address")),
        ([0xff00, 0, 0, 0, 0, 0, 0, 0], 8, Never("a multicast address")),
        // Global unicast is 2000::/3; everything else is unassigned.
        ([0x2000, 0, 0, 0, 0, 0, 0, 0], 3, Public),
        ([0, 0, 0, 0, 0, 0, 0, 0], 0, Never("not a global unicast address")),
    ];
    table.iter().find(|(net, len, _)| in_v6(ip, *net, *len)).map_or(Public, |(_, _, c)| *c)
}

/// How names become addresses; the system resolver, or a fake in tests.
pub trait Lookup: Send + Sync + 'static {
    fn lookup(&self, host: String) -> BoxFuture<'static, io::Result<Vec<IpAddr>>>;
}

/// The operating system's resolver (getaddrinfo, on tokio's blocking pool).
pub struct SystemLookup;

impl Lookup for SystemLookup {
    fn lookup(&self, host: String) -> BoxFuture<'static, io::Result<Vec<IpAddr>>> {
        Box::pin(async move {
            Ok(tokio::net::lookup_host((host.as_str(), 0)).await?.map(|a| a.ip()).collect())
        })
    }
}

/// The HTTP client's resolver: resolves, then refuses the name when any of
/// its addresses is fenced off (a name with one private address among
/// public ones is not trusted with any of them).
pub struct FencedResolver {
    pub policy: Policy,
    pub lookup: Arc<dyn Lookup>,
}

impl Resolve for FencedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let (policy, lookup, host) = (self.policy, self.lookup.clone(), name.as_str().to_string());
        Box::pin(async move {
            let ips = lookup.lookup(host.clone()).await?;
            if ips.is_empty() {
                return Err(io::Error::new(io::ErrorKind::NotFound, "no addresses").into());
            }
            for ip in &ips {
                // Boxed as itself (not as a Box<Refused>), so the client
                // can find it in the error's source chain.
                policy
                    .check_ip(*ip)
                    .map_err(|Refused(why)| Refused(format!("{host} resolves to {why}")))?;
            }
            let addrs: Addrs = Box::new(ips.into_iter().map(|ip| SocketAddr::new(ip, 0)));
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STRICT: Policy = Policy { allow_private: false };
    const OPEN: Policy = Policy { allow_private: true };

    fn refused(p: Policy, url: &str) -> bool {
        p.check_url(url).is_err()
    }

    #[test]
    fn the_reported_ssrf_urls_are_refused() {
        for url in [
            "https://169.254.169.254/latest/meta-data/",
            "https://10.0.0.1/",
            "http://127.0.0.1@169.254.169.254/latest/meta-data/",
            "https://127.0.0.1@169.254.169.254/latest/meta-data/",
            "http://localhost@attacker.example/",
            "https://localhost@attacker.example/",
            "https://user:pass@attacker.example/",
            "http://127.0.0.1/",
            "http://attacker.example/",
            "https://localhost/",
            "https://api.localhost./",
            "ftp://attacker.example/",
            "file:///etc/passwd",
            "not a url",
        ] {
            assert!(refused(STRICT, url), "{url} must be refused");
        }
        // Userinfo and metadata stay refused even when private targets are allowed.
        for url in [
            "http://127.0.0.1@169.254.169.254/",
            "http://localhost@attacker.example/",
            "https://169.254.169.254/",
            "http://[fd00:ec2::254]/",
            "ftp://127.0.0.1/",
        ] {
            assert!(refused(OPEN, url), "{url} must be refused even with the flag");
        }
    }

    #[test]
    fn literal_addresses_in_every_spelling_are_checked() {
        for url in [
            "https://127.1/",
            "https://2130706433/",
            "https://0x7f000001/",
            "https://0177.0.0.1/",
            "https://127.0.0.1./",
            "https://0.0.0.0/",
            "https://[::1]/",
            "https://[::ffff:127.0.0.1]/",
            "https://[::ffff:a9fe:a9fe]/",
            "https://[::ffff:10.0.0.1]/",
            "https://[64:ff9b::a9fe:a9fe]/",
            "https://[2002:a9fe:a9fe::1]/",
            "https://[fe80::1]/",
            "https://[fc00::1]/",
            "https://[fd12:3456::1]/",
            "https://[fd00:ec2::254]/",
            "https://[ff02::1]/",
            "https://[::]/",
            "https://[2001:db8::1]/",
            "https://100.64.0.1/",
            "https://192.168.1.1/",
            "https://172.16.0.1/",
            "https://224.0.0.1/",
            "https://255.255.255.255/",
            "https://198.18.0.1/",
        ] {
            assert!(refused(STRICT, url), "{url} must be refused");
        }
        assert!(STRICT.check_url("https://93.184.215.14/hook").is_ok());
        assert!(STRICT.check_url("https://[2606:4700::1111]/hook").is_ok());
        assert!(STRICT.check_url("https://hooks.example.com:8443/a?b=c#frag").is_ok());
        assert_eq!(
            STRICT.check_url("https://hooks.example.com/a#frag").unwrap().as_str(),
            "https://hooks.example.com/a"
        );
    }

    #[test]
    fn addresses_are_classified() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        for s in ["127.0.0.1", "10.1.2.3", "169.254.1.1", "100.64.0.1", "::1", "fe80::1", "fc00::1"]
        {
            assert!(STRICT.check_ip(ip(s)).is_err(), "{s}");
            assert!(OPEN.check_ip(ip(s)).is_ok(), "{s} is allowed with the flag");
        }
        for s in [
            "169.254.169.254",
            "100.100.100.200",
            "fd00:ec2::254",
            "::ffff:169.254.169.254",
            "0.0.0.0",
            "::",
            "239.1.1.1",
            "ff05::1",
            "240.0.0.1",
            "192.0.2.1",
            "2001:db8::1",
            "::127.0.0.1",
            "2001::1",
        ] {
            assert!(OPEN.check_ip(ip(s)).is_err(), "{s} is never allowed");
        }
        for s in ["1.1.1.1", "8.8.8.8", "2606:4700::1111", "2a00:1450:4001::1"] {
            assert!(STRICT.check_ip(ip(s)).is_ok(), "{s} is public");
        }
        // Mapped and embedded IPv4 are judged as IPv4.
        assert!(STRICT.check_ip(ip("::ffff:8.8.8.8")).is_ok());
        assert!(STRICT.check_ip(ip("::ffff:192.168.0.1")).is_err());
        assert!(STRICT.check_ip(ip("64:ff9b::7f00:1")).is_err());
    }
}
