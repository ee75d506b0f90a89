//! Who may run as whom: the agent's run-as policy. Deny by default.
//!
//! ```toml
//! [[allow]]
//! identity = "rjob-controller"    # the client certificate's CN or a DNS SAN; "*": any client the CA signed
//! users = ["deploy", "postgres"]  # "*": any user except root
//! groups = ["ops"]                # any member of these groups (never root)
//! password = false                # true: PAM must accept the user's password
//! default = "deploy"              # run-as user when a request names none
//! ```
//!
//! An identity no rule names is refused; root is allowed only where a rule names `root` in
//! `users` explicitly.

use std::path::Path;

use serde::Deserialize;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    #[serde(default)]
    pub allow: Vec<Rule>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub identity: String,
    #[serde(default)]
    pub users: Vec<String>,
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(default)]
    pub password: bool,
    pub default: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("reading policy file {path}: {source}")]
    Read {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("policy file {path}: {message}")]
    Parse {
        path: std::path::PathBuf,
        message: String,
    },
}

/// Why a request was refused. The messages are sent to the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("client {0:?} is not in this agent's policy: nothing may run for it")]
    UnknownIdentity(String),
    #[error("client {0:?} has no default user in this agent's policy: name one with --user")]
    NoDefault(String),
    #[error("client {identity:?} may not run as {user} on this agent")]
    NotAllowed { identity: String, user: String },
    #[error("running as {0} needs a password: use --ask-password or --password-file")]
    PasswordRequired(String),
}

/// What the policy allows for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub user: String,
    pub password_required: bool,
}

impl Policy {
    pub fn load(path: &Path) -> Result<Policy, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
            path: path.to_owned(),
            source,
        })?;
        let policy: Policy = toml::from_str(&text).map_err(|e| PolicyError::Parse {
            path: path.to_owned(),
            message: crate::config::toml_error(&text, &e),
        })?;
        for rule in &policy.allow {
            if rule.identity.is_empty() {
                return Err(PolicyError::Parse {
                    path: path.to_owned(),
                    message: "a rule has an empty identity".into(),
                });
            }
        }
        Ok(policy)
    }

    /// The policy of an agent that runs only as its own user, for any client it serves.
    pub fn own_user_only(user: &str) -> Policy {
        Policy {
            allow: vec![Rule {
                identity: "*".into(),
                users: vec![user.to_string()],
                groups: Vec::new(),
                password: false,
                default: Some(user.to_string()),
            }],
        }
    }

    /// Decides a request. `identities` are the names the client's certificate carries;
    /// `in_group(user, group)` tells group membership, `is_root(user)` whether the user has
    /// uid 0 (whatever its name: root is allowed only where a rule names that very user).
    pub fn decide(
        &self,
        identities: &[String],
        requested: Option<&str>,
        has_password: bool,
        in_group: impl Fn(&str, &str) -> bool,
        is_root: impl Fn(&str) -> bool,
    ) -> Result<Grant, Refusal> {
        let shown = identities.first().cloned().unwrap_or_default();
        let rules: Vec<&Rule> = self
            .allow
            .iter()
            .filter(|r| r.identity == "*" || identities.contains(&r.identity))
            .collect();
        if rules.is_empty() {
            return Err(Refusal::UnknownIdentity(shown));
        }
        let user = match requested.filter(|u| !u.is_empty()) {
            Some(u) => u.to_string(),
            None => rules
                .iter()
                .find_map(|r| r.default.clone())
                .ok_or_else(|| Refusal::NoDefault(shown.clone()))?,
        };
        let root = user == "root" || is_root(&user);
        let allowing: Vec<&&Rule> = rules
            .iter()
            .filter(|r| r.allows(&user, root, &in_group))
            .collect();
        if allowing.iter().any(|r| !r.password) {
            return Ok(Grant {
                user,
                password_required: false,
            });
        }
        if !allowing.is_empty() {
            if !has_password {
                return Err(Refusal::PasswordRequired(user));
            }
            return Ok(Grant {
                user,
                password_required: true,
            });
        }
        Err(Refusal::NotAllowed {
            identity: shown,
            user,
        })
    }
}

impl Rule {
    fn allows(&self, user: &str, root: bool, in_group: &impl Fn(&str, &str) -> bool) -> bool {
        if self.users.iter().any(|u| u == user) {
            return true;
        }
        if root {
            return false; // root (uid 0, any name) only where named
        }
        self.users.iter().any(|u| u == "*") || self.groups.iter().any(|g| in_group(user, g))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests

    use super::*;

    fn policy(text: &str) -> Policy {
        toml::from_str(text).unwrap()
    }

    fn ids(s: &str) -> Vec<String> {
        vec![s.to_string()]
    }

    const EXAMPLE: &str = r#"
        [[allow]]
        identity = "ops"
        users = ["deploy", "postgres"]
        groups = ["web"]
        default = "deploy"

        [[allow]]
        identity = "ops"
        users = ["*"]
        password = true

        [[allow]]
        identity = "admin"
        users = ["root"]
    "#;

    fn is_root(user: &str) -> bool {
        user == "root" || user == "toor"
    }

    fn web_group(user: &str, group: &str) -> bool {
        group == "web" && (user == "www" || user == "root")
    }

    #[test]
    fn unknown_identities_are_refused() {
        let p = policy(EXAMPLE);
        assert_eq!(
            p.decide(&ids("stranger"), Some("deploy"), false, web_group, is_root),
            Err(Refusal::UnknownIdentity("stranger".into()))
        );
        assert!(matches!(
            Policy::default().decide(&ids("ops"), None, false, web_group, is_root),
            Err(Refusal::UnknownIdentity(_))
        ));
    }

    #[test]
    fn named_users_groups_and_defaults() {
        let p = policy(EXAMPLE);
        let ok = |user: &str| {
            Ok(Grant {
                user: user.into(),
                password_required: false,
            })
        };
        assert_eq!(
            p.decide(&ids("ops"), None, false, web_group, is_root),
            ok("deploy")
        );
        assert_eq!(
            p.decide(&ids("ops"), Some("postgres"), false, web_group, is_root),
            ok("postgres")
        );
        assert_eq!(
            p.decide(&ids("ops"), Some("www"), false, web_group, is_root),
            ok("www")
        );
        assert_eq!(
            p.decide(&ids("admin"), Some("root"), false, web_group, is_root),
            ok("root")
        );
        assert_eq!(
            p.decide(&ids("admin"), None, false, web_group, is_root),
            Err(Refusal::NoDefault("admin".into()))
        );
    }

    #[test]
    fn a_password_rule_needs_a_password() {
        let p = policy(EXAMPLE);
        assert_eq!(
            p.decide(&ids("ops"), Some("alice"), false, web_group, is_root),
            Err(Refusal::PasswordRequired("alice".into()))
        );
        assert_eq!(
            p.decide(&ids("ops"), Some("alice"), true, web_group, is_root),
            Ok(Grant {
                user: "alice".into(),
                password_required: true
            })
        );
    }

    #[test]
    fn root_only_where_named() {
        let p = policy(EXAMPLE);
        // A uid-0 alias is root too.
        assert_eq!(
            p.decide(&ids("ops"), Some("toor"), true, web_group, is_root),
            Err(Refusal::NotAllowed {
                identity: "ops".into(),
                user: "toor".into()
            })
        );
        // Neither "*" nor group membership reaches root, with or without a password.
        for pw in [false, true] {
            assert_eq!(
                p.decide(&ids("ops"), Some("root"), pw, web_group, is_root),
                Err(Refusal::NotAllowed {
                    identity: "ops".into(),
                    user: "root".into()
                })
            );
        }
    }

    #[test]
    fn any_name_of_the_certificate_matches_and_unknown_keys_are_refused() {
        let p = policy(EXAMPLE);
        let names = vec!["host-7".to_string(), "admin".to_string()];
        assert!(p.decide(&names, Some("root"), false, web_group, is_root).is_ok());
        assert!(toml::from_str::<Policy>("[[allow]]\nidentity = \"a\"\nuser = [\"x\"]\n").is_err());
    }
}
