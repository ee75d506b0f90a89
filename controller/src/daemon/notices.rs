//! The store's notices on every answer of the daemon: a tower layer that adds the
//! [`WARNING_HEADER`] (store writes are failing) and [`LOST_HEADER`] (jobs lost from the store)
//! response headers, which the CLI prints (`daemon::client`).

use std::sync::Arc;

use tonic::codegen::http::{self, HeaderValue};
use tower::util::MapResponseLayer;

use crate::daemon::health::{Health, LOST_HEADER, WARNING_HEADER};

/// A header value from any text: what is not visible ASCII becomes `?`.
pub fn header_value(text: &str) -> Option<HeaderValue> {
    let clean: String = text
        .chars()
        .map(|c| if c == ' ' || c.is_ascii_graphic() { c } else { '?' })
        .collect();
    HeaderValue::from_str(&clean).ok()
}

type Response = http::Response<tonic::body::Body>;

/// The layer for the daemon's CLI server.
pub fn layer(health: Arc<Health>) -> MapResponseLayer<impl Fn(Response) -> Response + Clone> {
    MapResponseLayer::new(move |mut response: Response| {
        let headers = response.headers_mut();
        if let Some(value) = health.warning().as_deref().and_then(header_value) {
            headers.insert(WARNING_HEADER, value);
        }
        if let Some(value) = health.lost().as_deref().and_then(header_value) {
            headers.insert(LOST_HEADER, value);
        }
        response
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_values_take_any_text() {
        let v = header_value("jobs 3-5 lost: caf\u{e9}\n").expect("a value");
        assert_eq!(v.to_str().ok(), Some("jobs 3-5 lost: caf??"));
    }
}
