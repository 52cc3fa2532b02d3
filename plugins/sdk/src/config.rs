//! A plugin's config, declared once. [`config!`](crate::config!) takes the
//! serde struct as you would write it, with each key's description as its
//! doc comment and its default (JSON text, as the host fills it in) after
//! `=`, and also makes the key list that `describe()` reports. Before it,
//! every key was written twice — a struct field and a `config_key(..)`
//! string — and the two could drift apart.
//!
//! ```ignore
//! doctor_sdk::config! {
//!     #[derive(serde::Deserialize)]
//!     struct Config {
//!         /// absolute paths of the files to watch
//!         paths: Vec<String>,
//!         /// size above which a file is reported
//!         max_bytes: u64 = "104857600",
//!     }
//! }
//! // Info::new(..).config::<Config>()
//! ```
//!
//! A config of many keys may be written one line per key instead, the
//! description as a string after the default: the same struct and the same
//! `describe()` keys (the description also becomes the field's doc).
//!
//! ```ignore
//! doctor_sdk::config! {
//!     #[derive(serde::Deserialize)]
//!     struct Config {
//!         paths: Vec<String>, "absolute paths of the files to watch",
//!         max_bytes: u64 = "104857600", "size above which a file is reported",
//!     }
//! }
//! ```
//!
//! Keys that several plugins share are declared once, as a `config!` struct
//! of their own (fields may be `pub`), and taken in whole by `..name: Type`
//! after the plugin's own keys: serde flattens it into the same table, and
//! `describe()` lists its keys after the plugin's. A flattened struct
//! cannot be combined with `#[serde(deny_unknown_fields)]`; the host already
//! refuses a key that `describe()` does not declare.

/// One declared config key, as `describe()` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigKey {
    pub name: &'static str,
    /// JSON text; None for a required key.
    pub default: Option<&'static str>,
    pub description: String,
}

impl ConfigKey {
    /// `docs` are the field's `#[doc]` lines: each trimmed, joined by a space.
    pub fn new(
        name: &'static str,
        default: Option<&'static str>,
        docs: &[Option<&str>],
    ) -> ConfigKey {
        let lines: Vec<&str> = docs.iter().flatten().map(|l| l.trim()).collect();
        ConfigKey {
            name,
            default,
            description: lines.join(" "),
        }
    }
}

/// A config struct made by [`config!`](crate::config!): it knows its keys.
pub trait DeclaredConfig {
    fn config_keys() -> Vec<ConfigKey>;
}

/// Declare a plugin's config struct and its `describe()` keys at once.
/// See the [module](crate::config) documentation.
#[macro_export]
macro_rules! config {
    // One line per key: `key: Type = "default", "description",`.
    (
        $(#[$struct_attr:meta])*
        $vis:vis struct $name:ident {
            $(
                $(#[$($field_attr:tt)*])*
                $field_vis:vis $field:ident : $ty:ty $(= $default:literal)? , $description:literal
            ),*
            $(, ..$group:ident : $group_ty:ty)* $(,)?
        }
    ) => {
        $crate::config! {
            $(#[$struct_attr])*
            $vis struct $name {
                $( #[doc = $description] $(#[$($field_attr)*])* $field_vis $field : $ty $(= $default)? ),*
                $(, ..$group : $group_ty)*
            }
        }
    };
    // Doc comment per key.
    (
        $(#[$struct_attr:meta])*
        $vis:vis struct $name:ident {
            $(
                $(#[$($field_attr:tt)*])*
                $field_vis:vis $field:ident : $ty:ty $(= $default:literal)?
            ),*
            $(, ..$group:ident : $group_ty:ty)* $(,)?
        }
    ) => {
        $(#[$struct_attr])*
        $vis struct $name {
            $( $(#[$($field_attr)*])* $field_vis $field: $ty, )*
            $( #[serde(flatten)] $group: $group_ty, )*
        }

        impl $crate::config::DeclaredConfig for $name {
            fn config_keys() -> ::std::vec::Vec<$crate::config::ConfigKey> {
                #[allow(unused_mut)]
                let mut keys = ::std::vec![$(
                    $crate::config::ConfigKey::new(
                        ::std::stringify!($field),
                        $crate::__config_default!($($default)?),
                        &[$($crate::__config_doc!(#[$($field_attr)*])),*],
                    )
                ),*];
                $( keys.extend(<$group_ty as $crate::config::DeclaredConfig>::config_keys()); )*
                keys
            }
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __config_default {
    () => {
        ::std::option::Option::None
    };
    ($default:literal) => {
        ::std::option::Option::Some($default)
    };
}

/// A field attribute's doc text, or None for any other attribute (serde's).
#[doc(hidden)]
#[macro_export]
macro_rules! __config_doc {
    (#[doc = $doc:literal]) => {
        ::std::option::Option::Some($doc)
    };
    (#[$($other:tt)*]) => {
        ::std::option::Option::None
    };
}

#[cfg(test)]
mod tests {
    use super::{ConfigKey, DeclaredConfig};
    use serde::Deserialize;

    crate::config! {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Example {
            /// database label from [databases]
            db: String,
            /// how times are stored: auto, s, ms
            /// (detected and stated)
            #[serde(default)]
            time_unit: String = r#""auto""#,
            /// values that count as "complete"
            complete: Vec<String> = r#"["complete", "done"]"#,
        }
    }

    #[test]
    fn keys_come_from_the_fields_in_order_with_docs_and_defaults() {
        assert_eq!(
            Example::config_keys(),
            [
                ConfigKey {
                    name: "db",
                    default: None,
                    description: "database label from [databases]".into()
                },
                ConfigKey {
                    name: "time_unit",
                    default: Some("\"auto\""),
                    description: "how times are stored: auto, s, ms (detected and stated)".into()
                },
                ConfigKey {
                    name: "complete",
                    default: Some(r#"["complete", "done"]"#),
                    description: "values that count as \"complete\"".into()
                },
            ]
        );
    }

    crate::config! {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Compact {
            db: String, "database label from [databases]",
            #[serde(default)]
            time_unit: String = r#""auto""#, "how times are stored: auto, s, ms (detected and stated)",
            complete: Vec<String> = r#"["complete", "done"]"#, "values that count as \"complete\"",
        }
    }

    #[test]
    fn one_line_per_key_declares_the_same_keys() {
        assert_eq!(Compact::config_keys(), Example::config_keys());
        let e: Compact = serde_json::from_str(r#"{"db": "main", "complete": []}"#).unwrap();
        assert_eq!(
            (e.db.as_str(), e.time_unit.as_str(), e.complete.len()),
            ("main", "", 0)
        );
    }

    #[test]
    fn the_struct_keeps_its_serde_attributes() {
        let e: Example = serde_json::from_str(r#"{"db": "main", "complete": []}"#).unwrap();
        assert_eq!(
            (e.db.as_str(), e.time_unit.as_str(), e.complete.len()),
            ("main", "", 0)
        );
        assert!(
            serde_json::from_str::<Example>(r#"{"db": "x", "complete": [], "nope": 1}"#).is_err()
        );
    }

    crate::config! {
        #[derive(Deserialize)]
        pub struct Shared {
            pub unit: String = r#""auto""#, "how times are stored",
            pub skew: u64 = "120", "allowed clock skew, seconds",
        }
    }

    crate::config! {
        #[derive(Deserialize)]
        struct WithShared {
            db: String, "database label from [databases]",
            ..shared: Shared,
        }
    }

    #[test]
    fn a_shared_group_is_flattened_into_the_keys_and_the_table() {
        let names: Vec<&str> = WithShared::config_keys().iter().map(|k| k.name).collect();
        assert_eq!(names, ["db", "unit", "skew"]);
        assert_eq!(WithShared::config_keys()[1], Shared::config_keys()[0]);
        let c: WithShared =
            serde_json::from_str(r#"{"db": "main", "unit": "ms", "skew": 5}"#).unwrap();
        assert_eq!(
            (c.db.as_str(), c.shared.unit.as_str(), c.shared.skew),
            ("main", "ms", 5)
        );
    }
}
