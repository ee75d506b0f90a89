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
//! An identity no rule names is refused; root (the name `root`, or uid 0 under any name) is
//! allowed only where a rule names that very user in `users`. The decision comes in two
//! steps: [`Policy::target`] names the user (before any lookup), [`Policy::decide`] judges
//! it with what the one lookup of that user found (see `users`).

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

    /// The rules that apply to a client with these certificate names.
    fn rules(&self, identities: &[String]) -> Result<Vec<&Rule>, Refusal> {
        let rules: Vec<&Rule> = self
            .allow
            .iter()
            .filter(|r| r.identity == "*" || identities.contains(&r.identity))
            .collect();
        if rules.is_empty() {
            return Err(Refusal::UnknownIdentity(
                identities.first().cloned().unwrap_or_default(),
            ));
        }
        Ok(rules)
    }

    /// The user a request is for: the one it names, or its client's default. Decided before
    /// any lookup, so that the user database is asked about one name only.
    pub fn target(&self, identities: &[String], requested: Option<&str>) -> Result<String, Refusal> {
        let rules = self.rules(identities)?;
        match requested.filter(|u| !u.is_empty()) {
            Some(u) => Ok(u.to_string()),
            None => rules
                .iter()
                .find_map(|r| r.default.clone())
                .ok_or_else(|| Refusal::NoDefault(identities.first().cloned().unwrap_or_default())),
        }
    }

    /// Decides a request for `user`. `identities` are the names the client's certificate
    /// carries; `root` whether the user is root (named `root`, or uid 0 in the very record
    /// that would run: root is allowed only where a rule names that very user);
    /// `in_group(group)` tells the user's membership.
    pub fn decide(
        &self,
        identities: &[String],
        user: &str,
        root: bool,
        has_password: bool,
        in_group: impl Fn(&str) -> bool,
    ) -> Result<Grant, Refusal> {
        let rules = self.rules(identities)?;
        let root = root || user == "root";
        let allowing: Vec<&&Rule> = rules.iter().filter(|r| r.allows(user, root, &in_group)).collect();
        let user = user.to_string();
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
            identity: identities.first().cloned().unwrap_or_default(),
            user,
        })
    }
}

impl Rule {
    fn allows(&self, user: &str, root: bool, in_group: &impl Fn(&str) -> bool) -> bool {
        if self.users.iter().any(|u| u == user) {
            return true;
        }
        if root {
            return false; // root (uid 0, any name) only where named
        }
        self.users.iter().any(|u| u == "*") || self.groups.iter().any(|g| in_group(g))
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

    /// A whole decision, as the agent makes it: the target first, then the rules.
    fn decide(p: &Policy, ids: &[String], requested: Option<&str>, pw: bool) -> Result<Grant, Refusal> {
        let user = p.target(ids, requested)?;
        p.decide(ids, &user, is_root(&user), pw, |g| web_group(&user, g))
    }

    #[test]
    fn unknown_identities_are_refused() {
        let p = policy(EXAMPLE);
        assert_eq!(
            decide(&p, &ids("stranger"), Some("deploy"), false),
            Err(Refusal::UnknownIdentity("stranger".into()))
        );
        assert!(matches!(
            decide(&Policy::default(), &ids("ops"), None, false),
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
        assert_eq!(decide(&p, &ids("ops"), None, false), ok("deploy"));
        assert_eq!(decide(&p, &ids("ops"), Some("postgres"), false), ok("postgres"));
        assert_eq!(decide(&p, &ids("ops"), Some("www"), false), ok("www"));
        assert_eq!(decide(&p, &ids("admin"), Some("root"), false), ok("root"));
        assert_eq!(
            decide(&p, &ids("admin"), None, false),
            Err(Refusal::NoDefault("admin".into()))
        );
    }

    #[test]
    fn a_password_rule_needs_a_password() {
        let p = policy(EXAMPLE);
        assert_eq!(
            decide(&p, &ids("ops"), Some("alice"), false),
            Err(Refusal::PasswordRequired("alice".into()))
        );
        assert_eq!(
            decide(&p, &ids("ops"), Some("alice"), true),
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
            decide(&p, &ids("ops"), Some("toor"), true),
            Err(Refusal::NotAllowed {
                identity: "ops".into(),
                user: "toor".into()
            })
        );
        // Neither "*" nor group membership reaches root, with or without a password.
        for pw in [false, true] {
            assert_eq!(
                decide(&p, &ids("ops"), Some("root"), pw),
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
        assert!(decide(&p, &names, Some("root"), false).is_ok());
        assert!(toml::from_str::<Policy>("[[allow]]\nidentity = \"a\"\nuser = [\"x\"]\n").is_err());
    }
}
