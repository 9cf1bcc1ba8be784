//! Which underlay routes each running vtepd instance holds, so that one instance's start-up sweep
//! leaves another's alone.
//!
//! host-gw and direct routes sit on the underlay with protocol 118 whichever instance installed
//! them, and the sweep must remove what a killed run left. Running one instance per VNI is how
//! several VNIs share a host today, so the sweep must tell a dead run's routes from a live
//! neighbour's. Each instance keeps a claim file beside its control socket, `<instance>.routes` in
//! the namespace's directory (`/run/vtepd` in the host's: see `api::netns`), listing the underlay
//! routes it wants or has, and holds an `flock` on it while it runs. The lock dies with the
//! process, SIGKILL included, so a file whose lock can be taken is a dead run's and claims nothing;
//! `/run` is emptied at boot, as the routes are.
use super::netlink::Route;
use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

const SUFFIX: &str = ".routes";
const HEADER: &str = "# underlay routes a running vtepd instance holds (its flock on this file says it runs)\n";

#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    #[error("cannot open {path}: {source} (is /run writable for vtepd?)")]
    Open { path: PathBuf, source: io::Error },
    #[error("{path} is locked: another vtepd instance of this name runs in this network namespace")]
    Held { path: PathBuf },
}

/// This instance's claims, written whenever they change.
pub struct Claims {
    file: File,
    path: PathBuf,
    underlay: u32,
    written: Option<BTreeSet<Route>>,
    warned: bool,
}

impl Claims {
    /// Creates (or takes over a dead run's) claim file `name` in `dir` and locks it.
    pub fn open(dir: &Path, name: &str, underlay: u32) -> Result<Claims, ClaimError> {
        let path = dir.join(format!("{name}{SUFFIX}"));
        let open_err = |source| ClaimError::Open { path: path.clone(), source };
        std::fs::create_dir_all(dir).map_err(open_err)?;
        let file = File::options().read(true).write(true).create(true).truncate(false).open(&path).map_err(open_err)?;
        // Another instance's sweep holds the lock for a moment while it reads the file.
        for _ in 0..20 {
            if flock(&file, libc::LOCK_EX | libc::LOCK_NB) {
                return Ok(Claims { file, path, underlay, written: None, warned: false });
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Err(ClaimError::Held { path })
    }

    /// The underlay is another interface now (`ifindex`): routes through it are the ones recorded
    /// from the next [`Self::record`] on.
    pub fn set_underlay(&mut self, ifindex: u32) {
        self.underlay = ifindex;
        self.written = None;
    }

    /// Records the routes of `routes` that go through the underlay, if they changed since the last
    /// time. Written in place (no rename, so the lock stays on the file and an unprivileged vtepd
    /// needs no directory rights): a sweep reading at that very moment may see a partial list and
    /// remove a route, which the owner's route check puts back within seconds.
    pub fn record(&mut self, routes: impl Iterator<Item = Route>) {
        let set: BTreeSet<Route> = routes.filter(|r| r.ifindex == self.underlay).collect();
        if self.written.as_ref() == Some(&set) {
            return;
        }
        let mut text = String::from(HEADER);
        for r in &set {
            text.push_str(&r.to_string());
            text.push('\n');
        }
        let res = self.file.write_all_at(text.as_bytes(), 0).and_then(|()| self.file.set_len(text.len() as u64));
        match res {
            Ok(()) => self.written = Some(set),
            Err(e) if !std::mem::replace(&mut self.warned, true) => tracing::warn!(
                path = %self.path.display(), error = %e,
                "cannot record this instance's underlay routes; another vtepd starting now may remove them until the next route check"
            ),
            Err(_) => {}
        }
    }
}

/// Any orderly end — a clean stop once the routes are gone, a start that fails — takes the file
/// along; only SIGKILL leaves it, with no lock on it. (Under `--user` the directory is no longer
/// writable at exit, so the file stays, claiming nothing.)
impl Drop for Claims {
    fn drop(&mut self) {
        let _ = super::api::netns::remove_file(&self.path);
    }
}

/// The routes that live instances other than `own` claim in `dir`, with the claiming instance's
/// name. An unreadable or garbled file claims what it can be read to claim.
pub fn held_by_others(dir: &Path, own: &str) -> HashMap<Route, String> {
    let mut held = HashMap::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return held };
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(name) = file_name.to_str().and_then(|n| n.strip_suffix(SUFFIX)) else { continue };
        if name == own {
            continue;
        }
        let Ok(file) = File::open(entry.path()) else { continue };
        if flock(&file, libc::LOCK_SH | libc::LOCK_NB) {
            continue; // its owner is gone (closing the file drops our lock)
        }
        let text = io::read_to_string(&file).unwrap_or_default();
        held.extend(text.lines().filter_map(parse_route).map(|r| (r, name.to_string())));
    }
    held
}

fn flock(f: &File, op: libc::c_int) -> bool {
    // SAFETY: flock on a descriptor we own; no memory is passed.
    unsafe { libc::flock(f.as_raw_fd(), op) == 0 }
}

/// Reads back a route as [`Route`]'s `Display` writes it: `10.244.2.0/24 via 192.0.2.2 dev 3 onlink`.
fn parse_route(line: &str) -> Option<Route> {
    let mut words = line.split_whitespace();
    let (dst, len) = words.next()?.split_once('/')?;
    let mut route = Route { dst: dst.parse().ok()?, prefix_len: len.parse().ok()?, gateway: None, ifindex: 0, onlink: false };
    while let Some(word) = words.next() {
        match word {
            "via" => route.gateway = Some(words.next()?.parse::<Ipv4Addr>().ok()?),
            "dev" => route.ifindex = words.next()?.parse().ok()?,
            "onlink" => route.onlink = true,
            _ => return None,
        }
    }
    (route.prefix_len <= 32 && route.ifindex != 0).then_some(route)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(dst: [u8; 4], gw: Option<[u8; 4]>, ifindex: u32) -> Route {
        Route { dst: dst.into(), prefix_len: 24, gateway: gw.map(Into::into), ifindex, onlink: false }
    }

    fn scratch_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("vtepd-claims-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn routes_read_back_as_written_and_garbage_claims_nothing() {
        let mut r = route([10, 244, 2, 0], Some([192, 0, 2, 2]), 7);
        assert_eq!(parse_route(&r.to_string()), Some(r));
        r.onlink = true;
        r.gateway = None;
        assert_eq!(parse_route(&r.to_string()), Some(r));
        for bad in ["", "# comment", "10.244.2.0/33 dev 7", "10.244.2.0/24 via x dev 7", "10.244.2.0/24 dev", "10.244.2.0/24 via 1.2.3.4", "10.244.2.0/24 dev 7 table 5"] {
            assert_eq!(parse_route(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_live_instance_claims_its_underlay_routes_and_a_released_or_dead_one_nothing() {
        let dir = scratch_dir("live");
        let (ours, theirs) = (route([10, 244, 2, 0], Some([192, 0, 2, 2]), 3), route([10, 244, 3, 0], None, 9));
        let mut a = Claims::open(&dir, "vtep0", 3).unwrap();
        a.record([ours, theirs].into_iter());
        // Only the underlay's routes (index 3) are claimed; the device's go with the device.
        assert_eq!(held_by_others(&dir, "vtep1"), HashMap::from([(ours, "vtep0".to_string())]));
        assert!(held_by_others(&dir, "vtep0").is_empty(), "an instance's own old claims bind it");
        // A second live instance of the same name is refused its file.
        assert!(matches!(Claims::open(&dir, "vtep0", 3), Err(ClaimError::Held { .. })));
        // An orderly end takes the file along; a SIGKILLed run leaves its file behind with no
        // lock on it, which claims nothing.
        drop(a);
        assert!(!dir.join("vtep0.routes").exists());
        std::fs::write(dir.join("vtep0.routes"), format!("{ours}\n")).unwrap();
        assert!(held_by_others(&dir, "vtep1").is_empty());
        drop(Claims::open(&dir, "vtep0", 3).unwrap());
        assert!(std::fs::read_dir(&dir).unwrap().next().is_none());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_shrunk_claim_list_leaves_no_tail_of_the_old_one() {
        let dir = scratch_dir("shrink");
        let mut a = Claims::open(&dir, "host-gw", 3).unwrap();
        let many: Vec<Route> = (0..50).map(|i| route([10, 244, i, 0], Some([192, 0, 2, 2]), 3)).collect();
        a.record(many.iter().copied());
        a.record(many[..1].iter().copied());
        assert_eq!(held_by_others(&dir, "x").len(), 1);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
