//! The client's address and user agent, recorded on sessions and used for rate limits.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRef, FromRequestParts};
use axum::http::header::USER_AGENT;
use axum::http::request::Parts;
use latchkey_core::session::ClientMeta;

/// Where the client's address comes from: the TCP peer, or, behind a trusted proxy
/// (`LATCHKEY_TRUST_FORWARDED_FOR`), the last `X-Forwarded-For` entry (the one that proxy
/// appended; earlier entries are the client's own claims).
#[derive(Debug, Clone, Copy, Default)]
pub struct ClientAddressPolicy {
    /// Take the address from the last `X-Forwarded-For` entry.
    pub trust_forwarded_for: bool,
}

impl ClientAddressPolicy {
    /// The client address of a request, by this policy.
    pub fn address(&self, parts: &Parts) -> Option<IpAddr> {
        let forwarded = self
            .trust_forwarded_for
            .then(|| {
                let header =
                    parts.headers.get_all("x-forwarded-for").iter().filter_map(|v| v.to_str().ok()).next_back()?;
                header.rsplit(',').next()?.trim().parse::<IpAddr>().ok()
            })
            .flatten();
        forwarded.or_else(|| parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|ci| ci.0.ip()))
    }
}

/// The client's address and user agent. An extractor for any surface state from which a
/// [`ClientAddressPolicy`] can be taken (axum `FromRef`).
#[derive(Debug, Clone, Default)]
pub struct Client(pub ClientMeta);

impl<S> FromRequestParts<S> for Client
where
    S: Send + Sync,
    ClientAddressPolicy: FromRef<S>,
{
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let ip = ClientAddressPolicy::from_ref(state).address(parts).map(|ip| ip.to_string());
        let user_agent = parts.headers.get(USER_AGENT).and_then(|v| v.to_str().ok()).map(str::to_owned);
        Ok(Client(ClientMeta { ip, user_agent }))
    }
}

#[cfg(test)]
mod tests {
    use axum::http::Request;

    use super::*;

    fn parts(forwarded: &str) -> Parts {
        let mut req = Request::builder().header("x-forwarded-for", forwarded).body(()).expect("request");
        req.extensions_mut().insert(ConnectInfo(SocketAddr::from(([10, 0, 0, 1], 4000))));
        req.into_parts().0
    }

    #[test]
    fn forwarded_addresses_count_only_behind_a_trusted_proxy() {
        let p = parts("203.0.113.9, 198.51.100.7");
        assert_eq!(ClientAddressPolicy::default().address(&p), Some(IpAddr::from([10, 0, 0, 1])));
        let trusted = ClientAddressPolicy { trust_forwarded_for: true };
        assert_eq!(trusted.address(&p), Some(IpAddr::from([198, 51, 100, 7])), "the proxy's own entry");
        assert_eq!(trusted.address(&parts("garbage")), Some(IpAddr::from([10, 0, 0, 1])));
    }
}
