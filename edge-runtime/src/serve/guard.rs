//! The checks every request passes before its handler, against cross-site use of a service
//! that a browser on the same machine can reach: the `Host` header must name this service
//! (DNS rebinding), a browser's `Origin` must be the service's own or an allowed one, a
//! `POST` body must be declared `application/json` (a browser sends no such request
//! cross-site without a CORS preflight, which this service never grants), and the adapter
//! swap endpoints need the bearer token unless they are opened by configuration. Pure:
//! method, path and headers in, a verdict out; no I/O.

use std::net::{IpAddr, SocketAddr};

use axum::http::{HeaderMap, Method, header};

use super::api::ApiError;

/// The path of the adapter swap endpoint (`POST`, `DELETE`: state-changing).
pub const ADAPTER_PATH: &str = "/v1/adapter";

/// Which requests the service accepts, by `Host`, `Origin`, `Content-Type` and token.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Accepted `Host` values, lower-case, with and without the port.
    hosts: Vec<String>,
    /// Any `Host` is accepted (listening on every address with no list configured).
    any_host: bool,
    /// Allowed `Origin` values besides the service's own, lower-case.
    origins: Vec<String>,
    /// `POST`/`DELETE /v1/adapter` accepted without a token configured.
    admin_open: bool,
}

/// A host name as it appears in a `Host` header: IPv6 addresses in brackets.
fn host_name(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    }
}

impl Policy {
    /// The policy of a service listening on `listen`: loopback names and the listen address
    /// (bare or with its port) plus `allowed_hosts` as `Host`; its own origin plus
    /// `allowed_origins` as `Origin`; adapter swaps only with a token, unless `admin_open`.
    pub fn new(
        listen: SocketAddr,
        allowed_hosts: &[String],
        allowed_origins: &[String],
        token_set: bool,
        admin_open: bool,
    ) -> Self {
        let port = listen.port();
        let mut names = vec![
            "localhost".to_string(),
            "127.0.0.1".to_string(),
            "[::1]".to_string(),
        ];
        if !listen.ip().is_unspecified() {
            names.push(host_name(listen.ip()));
        }
        names.extend(allowed_hosts.iter().map(|h| h.to_ascii_lowercase()));
        let mut hosts = vec![];
        for n in names {
            hosts.push(format!("{n}:{port}"));
            hosts.push(n);
        }
        Policy {
            hosts,
            any_host: listen.ip().is_unspecified() && allowed_hosts.is_empty(),
            origins: allowed_origins
                .iter()
                .map(|o| o.trim_end_matches('/').to_ascii_lowercase())
                .collect(),
            admin_open: token_set || admin_open,
        }
    }

    /// Accepts or refuses a request by its method, path and headers.
    pub fn check(&self, method: &Method, path: &str, headers: &HeaderMap) -> Result<(), ApiError> {
        let host = match headers.get(header::HOST).map(|h| h.to_str()) {
            None => None,
            Some(Ok(h)) => Some(h.trim().to_ascii_lowercase()),
            Some(Err(_)) => return Err(forbidden("host", "The Host header is not text.")),
        };
        if let Some(h) = &host
            && !self.any_host
            && !self.hosts.iter().any(|a| a == h)
        {
            return Err(forbidden(
                "host",
                format!(
                    "The Host {h:?} is not this service's; add it to service.allowed_hosts to \
                     accept it."
                ),
            ));
        }
        if let Some(origin) = headers.get(header::ORIGIN) {
            let origin = origin.to_str().unwrap_or("").trim().to_ascii_lowercase();
            if !self.origin_allowed(&origin, host.as_deref()) {
                return Err(forbidden(
                    "origin",
                    format!(
                        "Requests from the origin {origin:?} are refused; add it to \
                         service.allowed_origins to accept it."
                    ),
                ));
            }
        }
        if *method == Method::POST && !is_json(headers) {
            return Err(ApiError {
                status: 415,
                ..ApiError::invalid(
                    None,
                    "The request body must be sent with Content-Type: application/json.",
                )
            }
            .with_code("unsupported_media_type"));
        }
        if path == ADAPTER_PATH
            && (*method == Method::POST || *method == Method::DELETE)
            && !self.admin_open
        {
            return Err(ApiError {
                status: 403,
                ..ApiError::invalid(
                    None,
                    "Adapter swaps need service.api_token (or service.admin_without_token = \
                     true on a trusted machine).",
                )
            }
            .with_code("admin_needs_token"));
        }
        Ok(())
    }

    /// Same origin (the `Origin`'s host and port are the request's `Host`), or listed.
    fn origin_allowed(&self, origin: &str, host: Option<&str>) -> bool {
        if self.origins.iter().any(|o| o == origin) {
            return true;
        }
        let authority = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"));
        match (authority, host) {
            (Some(a), Some(h)) => !a.is_empty() && a == h,
            _ => false,
        }
    }
}

/// True when `Content-Type` is `application/json` (parameters such as `charset` allowed).
fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
}

fn forbidden(what: &'static str, message: impl Into<String>) -> ApiError {
    ApiError {
        status: 403,
        ..ApiError::invalid(None, message)
    }
    .with_code(match what {
        "host" => "forbidden_host",
        _ => "forbidden_origin",
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).expect("header value"));
        }
        h
    }

    /// Header name and value pairs of one request.
    type Pairs = Vec<(&'static str, &'static str)>;

    fn loopback(token: bool, admin_open: bool) -> Policy {
        let listen: SocketAddr = "127.0.0.1:8080".parse().expect("addr");
        Policy::new(
            listen,
            &["thermo.lan".into()],
            &["http://localhost:3000".into()],
            token,
            admin_open,
        )
    }

    #[test]
    fn cross_site_requests_are_refused_and_local_ones_accepted() {
        const JSON: (&str, &str) = ("content-type", "application/json");
        let p = loopback(false, false);
        let post = Method::POST;
        let chat = "/v1/chat/completions";
        let refused: &[(&Method, &str, Pairs, u16)] = &[
            (
                &post,
                chat,
                vec![("host", "attacker.example:8080"), JSON],
                403,
            ),
            (&post, chat, vec![("host", "attacker.example"), JSON], 403),
            (&post, chat, vec![("host", "127.0.0.1:9999"), JSON], 403),
            (
                &post,
                chat,
                vec![
                    ("host", "127.0.0.1:8080"),
                    ("origin", "http://evil.example"),
                    JSON,
                ],
                403,
            ),
            (
                &post,
                chat,
                vec![("host", "127.0.0.1:8080"), ("origin", "null"), JSON],
                403,
            ),
            (
                &post,
                chat,
                vec![("host", "127.0.0.1:8080"), ("content-type", "text/plain")],
                415,
            ),
            (&post, chat, vec![("host", "127.0.0.1:8080")], 415),
            (
                &post,
                chat,
                vec![
                    ("host", "127.0.0.1:8080"),
                    ("content-type", "application/x-www-form-urlencoded"),
                ],
                415,
            ),
            (
                &post,
                ADAPTER_PATH,
                vec![("host", "127.0.0.1:8080"), JSON],
                403,
            ),
            (
                &Method::DELETE,
                ADAPTER_PATH,
                vec![("host", "localhost:8080")],
                403,
            ),
        ];
        for (method, path, h, status) in refused {
            let e = p
                .check(method, path, &headers(h))
                .expect_err(&format!("{method} {path} {h:?}"));
            assert_eq!(e.status, *status, "{method} {path} {h:?}: {e:?}");
        }
        let accepted: &[(&Method, &str, Pairs)] = &[
            (&post, chat, vec![("host", "127.0.0.1:8080"), JSON]),
            (
                &post,
                chat,
                vec![
                    ("host", "LOCALHOST"),
                    ("content-type", "Application/JSON; charset=utf-8"),
                ],
            ),
            (&post, chat, vec![("host", "[::1]:8080"), JSON]),
            (&post, chat, vec![("host", "thermo.lan:8080"), JSON]),
            (
                &post,
                chat,
                vec![
                    ("host", "localhost:8080"),
                    ("origin", "http://localhost:8080"),
                    JSON,
                ],
            ),
            (
                &post,
                chat,
                vec![
                    ("host", "127.0.0.1:8080"),
                    ("origin", "http://localhost:3000"),
                    JSON,
                ],
            ),
            (&Method::GET, "/healthz", vec![("host", "127.0.0.1:8080")]),
            (&Method::GET, ADAPTER_PATH, vec![("host", "127.0.0.1")]),
            (&Method::GET, "/v1/models", vec![]),
        ];
        for (method, path, h) in accepted {
            p.check(method, path, &headers(h))
                .unwrap_or_else(|e| panic!("{method} {path} {h:?}: {e:?}"));
        }
    }

    #[test]
    fn adapter_swaps_need_a_token_or_the_explicit_key() {
        let h = headers(&[
            ("host", "127.0.0.1:8080"),
            ("content-type", "application/json"),
        ]);
        for (token, open, ok) in [
            (false, false, false),
            (true, false, true),
            (false, true, true),
        ] {
            let p = loopback(token, open);
            for m in [Method::POST, Method::DELETE] {
                assert_eq!(
                    p.check(&m, ADAPTER_PATH, &h).is_ok(),
                    ok,
                    "{m} {token} {open}"
                );
            }
        }
    }

    #[test]
    fn a_service_on_every_address_checks_hosts_only_when_a_list_is_given() {
        let listen: SocketAddr = "0.0.0.0:8080".parse().expect("addr");
        let h = headers(&[("host", "192.168.1.7:8080")]);
        let open = Policy::new(listen, &[], &[], true, false);
        open.check(&Method::GET, "/v1/models", &h)
            .expect("any host");
        let listed = Policy::new(listen, &["thermo.lan".into()], &[], true, false);
        let e = listed
            .check(&Method::GET, "/v1/models", &h)
            .expect_err("unlisted host");
        assert_eq!(e.status, 403);
        let cross = headers(&[
            ("host", "192.168.1.7:8080"),
            ("origin", "http://evil.example"),
        ]);
        assert_eq!(
            open.check(&Method::GET, "/v1/models", &cross)
                .expect_err("foreign origin")
                .status,
            403
        );
    }
}
