//! The host-gw backend (Flannel's host-gw): no device, no data path, no encapsulation — one
//! `subnet via public_ip dev <underlay>` route per peer, removed again at exit. It only works when
//! every peer is on-link, so that is checked first and a peer behind a router is a start-up error
//! that names it.
use super::{install, DirectRoutes, Started, Underlay};
use crate::control::config::Config;
use crate::control::netlink::{Netlink, NetlinkError, Route};
use crate::control::claims::Claims;
use crate::control::overlay::{Installer, Overlay, RemoteNode};
use crate::control::run::{RunError, RunOptions};
use crate::table::Tables;

impl Installer for DirectRoutes {
    /// host-gw has no data path: the kernel routes are everything.
    fn update_tables(&mut self, _adding: &[RemoteNode], _removing: &[RemoteNode]) {}

    fn add(&mut self, nl: &mut Netlink, n: &RemoteNode) -> Result<(), NetlinkError> {
        if !self.is_direct(n) {
            // The underlay may have gained the peer's subnet since start: a reload is checked
            // against its addresses as they are now, and so must its peers be. (Cross-subnet mode
            // changes its view only in `Overlay::follow_underlay`: there a peer's class decides
            // which entries it has, so the old ones must go out under the old view first.) The
            // interface itself changes only there too.
            self.underlay.refresh_subnets();
        }
        DirectRoutes::add(self, nl, n)
    }

    fn remove(&mut self, nl: &mut Netlink, n: &RemoteNode) -> Result<(), NetlinkError> {
        DirectRoutes::remove(self, nl, n)
    }

    fn kernel_route(&self, n: &RemoteNode) -> Route {
        self.route(n)
    }

    fn direct_routes(&mut self) -> Option<&mut DirectRoutes> {
        Some(self)
    }

    fn routes_every_peer(&self) -> bool {
        true
    }
}

pub fn start(nl: Netlink, underlay: Underlay, cfg: &Config, opts: &RunOptions, claims: Option<Claims>) -> Result<Started, RunError> {
    underlay.check_on_link(&cfg.peers).map_err(RunError::PeerNotOnLink)?;
    tracing::info!(device = %underlay.name, peers = cfg.peers.len(), "routing (host-gw)");
    let installer = DirectRoutes { underlay };
    // Before anything is installed, so a failure leaves nothing behind; CAP_NET_ADMIN stays for
    // the peers, reloads and the teardown.
    super::drop_privileges(opts)?;
    let overlay = install(Overlay::with_installer(nl, Tables::new(), Box::new(installer)).with_claims(claims), &cfg.peers)?;
    Ok(Started::without_workers(overlay))
}
