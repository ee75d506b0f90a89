//! The rows of `rjob config show` for `rjob serve`'s retention: from the config file, else
//! the default (off). Flags given to `rjob serve` itself come on top of them there.

use crate::config::{Config, Source};
use crate::store::retention::show_size;
use crate::UsageError;

/// `(key, value, source)` for `retention`, `max_store_size` and `force_retention`.
pub fn rows(config: &Config) -> Result<Vec<(String, String, String)>, UsageError> {
    let source = |set: bool| {
        if set {
            Source::File(config.path.clone().unwrap_or_default())
        } else {
            Source::Default
        }
        .to_string()
    };
    let f = &config.file;
    let retention = config
        .retention()?
        .map_or("none".to_string(), |a| humantime::format_duration(a).to_string());
    let size = config.max_store_size()?.map_or("none".to_string(), show_size);
    Ok(vec![
        ("retention".into(), retention, source(f.retention.is_some())),
        ("max_store_size".into(), size, source(f.max_store_size.is_some())),
        (
            "force_retention".into(),
            f.force_retention.unwrap_or(false).to_string(),
            source(f.force_retention.is_some()),
        ),
    ])
}
