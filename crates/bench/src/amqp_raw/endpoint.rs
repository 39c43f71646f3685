//! Where and as whom to connect, from the same `amqp://` URI the lapin
//! scenario takes (or a bare `host:port/vhost`).

use anyhow::{Result, bail};

/// A broker address, virtual host and PLAIN credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Endpoint {
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) vhost: String,
    pub(crate) user: String,
    pub(crate) password: String,
}

impl Endpoint {
    /// Parses `[amqp://][user[:password]@]host[:port][/vhost]`. The vhost is
    /// percent-decoded (`%2f` is `/`); missing or empty, it is `/`. Credentials
    /// default to guest/guest, the port to 5672. `host` may be `[v6 address]`.
    pub(crate) fn parse(uri: &str) -> Result<Self> {
        let rest = match uri.split_once("://") {
            Some(("amqp", rest)) => rest,
            Some((scheme, _)) => bail!("unsupported scheme {scheme}:// (only amqp://)"),
            None => uri,
        };
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let (user, password) = match userinfo {
            Some(u) => {
                let (user, pass) = u.split_once(':').unwrap_or((u, ""));
                (decode(user)?, decode(pass)?)
            }
            None => ("guest".to_owned(), "guest".to_owned()),
        };
        let (host, port) = split_host_port(hostport)?;
        let vhost = match decode(path)? {
            v if v.is_empty() => "/".to_owned(),
            v => v,
        };
        for (what, s) in [("vhost", &vhost), ("user", &user)] {
            if s.len() > 255 {
                bail!("{what} is longer than 255 bytes");
            }
        }
        Ok(Self {
            host,
            port,
            vhost,
            user,
            password,
        })
    }
}

fn split_host_port(s: &str) -> Result<(String, u16)> {
    let (host, port) = if let Some(v6) = s.strip_prefix('[') {
        let Some((host, after)) = v6.split_once(']') else {
            bail!("unclosed [ in {s:?}");
        };
        (host, after.strip_prefix(':'))
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    if host.is_empty() {
        bail!("no host in {s:?}");
    }
    let port = match port {
        Some(p) => p.parse().map_err(|_| anyhow::anyhow!("bad port {p:?}"))?,
        None => 5672,
    };
    Ok((host.to_owned(), port))
}

/// Percent-decoding of one URI component.
fn decode(s: &str) -> Result<String> {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        if b != b'%' {
            out.push(b);
            continue;
        }
        let hex = [bytes.next(), bytes.next()];
        let digits = hex.map(|d| d.and_then(|d| char::from(d).to_digit(16)));
        let [Some(hi), Some(lo)] = digits else {
            bail!("bad percent escape in {s:?}");
        };
        out.push((hi * 16 + lo) as u8);
    }
    String::from_utf8(out).map_err(|_| anyhow::anyhow!("{s:?} is not UTF-8 once decoded"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(uri: &str, expected: (&str, u16, &str, &str, &str)) {
        let e = Endpoint::parse(uri).unwrap_or_else(|e| panic!("{uri}: {e}"));
        let got = (
            e.host.as_str(),
            e.port,
            e.vhost.as_str(),
            e.user.as_str(),
            e.password.as_str(),
        );
        assert_eq!(got, expected, "{uri}");
    }

    #[test]
    fn parses_uris_and_bare_addresses() {
        let local = ("127.0.0.1", 5672, "/", "guest", "guest");
        check("amqp://guest:guest@127.0.0.1:5672/%2f", local);
        check("amqp://127.0.0.1", local);
        check("127.0.0.1:5672", local);
        check("127.0.0.1:5672/", local);
        check(
            "amqp://bob:p%40ss@broker:56799/prod",
            ("broker", 56799, "prod", "bob", "p@ss"),
        );
        check(
            "localhost:1/a%2Fb",
            ("localhost", 1, "a/b", "guest", "guest"),
        );
        check("[::1]:5673/v", ("::1", 5673, "v", "guest", "guest"));
        check("[::1]", ("::1", 5672, "/", "guest", "guest"));
    }

    #[test]
    fn rejects_what_it_cannot_use() {
        for bad in [
            "amqps://h:5671/",
            "h:port",
            "h:99999",
            ":5672",
            "[::1",
            "h/%zz",
            "h/%4",
        ] {
            assert!(Endpoint::parse(bad).is_err(), "{bad}");
        }
        assert!(Endpoint::parse(&format!("h/{}", "v".repeat(256))).is_err());
    }
}
