//! The user database, as the policy decision uses it: one lookup of the user a request is
//! for, and that very record decides root and is spawned. A lookup that fails refuses the
//! request (fail closed); it is never read as "no such user" or "not root".

use std::cell::{Cell, RefCell};

use crate::policy::{Grant, Policy, Refusal};
use crate::runner::{RunUser, RunnerError};

/// Why "no such user" cannot be believed, if it cannot. glibc answers "not found", with no
/// error, when its modules cannot open the database for want of a file descriptor; so when
/// this process can open none, the absence is a failed lookup.
fn unreliable_absence(name: &str) -> Option<RunnerError> {
    match std::fs::File::open("/") {
        Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) => Some(RunnerError::User(
            format!("{name}: the user database cannot be read (no file descriptor free: {e})"),
        )),
        _ => None,
    }
}

/// Why a decision could not be made.
#[derive(Debug)]
pub enum Undecided {
    /// The policy refused.
    Refused(Refusal),
    /// The user or group database failed: the request is refused.
    Lookup(RunnerError),
    /// A lookup is needed and was not made (offline): decide again where blocking is allowed.
    Offline,
}

/// A decision: what the policy grants, and the user record (None: no such user) that is
/// both the one the policy judged and the one that runs.
pub type Decision = Result<(Grant, Option<RunUser>), Undecided>;

/// User lookups for one request. The agent's own user comes from memory; anyone else, and
/// any group, from the databases when `online`. Offline, such a lookup is not made but noted.
pub struct Users<'a> {
    own: &'a RunUser,
    online: bool,
    missed: Cell<bool>,
    failed: RefCell<Option<RunnerError>>,
}

impl<'a> Users<'a> {
    pub fn offline(own: &'a RunUser) -> Users<'a> {
        Users {
            own,
            online: false,
            missed: Cell::new(false),
            failed: RefCell::new(None),
        }
    }

    pub fn online(own: &'a RunUser) -> Users<'a> {
        Users {
            online: true,
            ..Users::offline(own)
        }
    }

    /// The one lookup of the user a request is for.
    fn user(&self, name: &str) -> Result<Option<RunUser>, Undecided> {
        if name == self.own.name {
            return Ok(Some(self.own.clone()));
        }
        if !self.online {
            return Err(Undecided::Offline);
        }
        match RunUser::lookup(name) {
            Ok(None) => unreliable_absence(name).map_or(Ok(None), |e| Err(Undecided::Lookup(e))),
            found => found.map_err(Undecided::Lookup),
        }
    }

    /// Whether `user` is a member of `group`; a failed group lookup is noted (and refuses
    /// the request) and counts as "not a member" meanwhile.
    fn in_group(&self, user: Option<&RunUser>, group: &str) -> bool {
        let Some(user) = user else {
            return false; // no such user: a member of nothing
        };
        if !self.online {
            self.missed.set(true);
            return false;
        }
        match nix::unistd::Group::from_name(group) {
            Ok(Some(g)) => user.gid == g.gid.as_raw() || user.groups.contains(&g.gid.as_raw()),
            Ok(None) => false,
            Err(e) => {
                self.failed
                    .borrow_mut()
                    .get_or_insert(RunnerError::User(format!("group {group}: {e}")));
                false
            }
        }
    }

    /// Decides a request for `target` (the user it names, or the policy's default).
    pub fn decide(
        &self,
        policy: &Policy,
        identities: &[String],
        target: &str,
        has_password: bool,
    ) -> Decision {
        let record = self.user(target)?;
        // Root by name or by uid: the uid of the record that would run.
        let root = target == "root" || record.as_ref().is_some_and(|u| u.uid == 0);
        let grant = policy.decide(identities, target, root, has_password, |group| {
            self.in_group(record.as_ref(), group)
        });
        if let Some(e) = self.failed.take() {
            return Err(Undecided::Lookup(e));
        }
        if self.missed.get() {
            return Err(Undecided::Offline);
        }
        let grant = grant.map_err(Undecided::Refused)?;
        Ok((grant, record))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests

    use super::*;

    fn own(uid: u32) -> RunUser {
        RunUser {
            name: "agentuser".into(),
            uid,
            gid: uid,
            home: "/home/agentuser".into(),
            shell: "/bin/sh".into(),
            groups: vec![uid],
        }
    }

    fn policy(text: &str) -> Policy {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn the_own_user_is_decided_from_memory_and_root_from_its_uid() {
        let ids = vec!["c".to_string()];
        let star = policy("[[allow]]\nidentity = \"c\"\nusers = [\"*\"]\n");
        let user = own(1000);
        let (grant, record) = Users::offline(&user)
            .decide(&star, &ids, "agentuser", false)
            .unwrap();
        assert_eq!(grant.user, "agentuser");
        assert_eq!(record.map(|r| r.uid), Some(1000));
        // The same name with uid 0: root, which "*" never reaches.
        let root = own(0);
        assert!(matches!(
            Users::offline(&root).decide(&star, &ids, "agentuser", false),
            Err(Undecided::Refused(Refusal::NotAllowed { .. }))
        ));
    }

    #[test]
    fn anything_needing_the_database_is_left_for_an_online_decision() {
        let ids = vec!["c".to_string()];
        let user = own(1000);
        let star = policy("[[allow]]\nidentity = \"c\"\nusers = [\"*\"]\n");
        assert!(matches!(
            Users::offline(&user).decide(&star, &ids, "someone", false),
            Err(Undecided::Offline)
        ));
        let groups = policy("[[allow]]\nidentity = \"c\"\ngroups = [\"ops\"]\n");
        assert!(matches!(
            Users::offline(&user).decide(&groups, &ids, "agentuser", false),
            Err(Undecided::Offline)
        ));
    }
}
