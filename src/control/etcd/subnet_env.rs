//! Flannel's subnet file (`/run/flannel/subnet.env`), which the Flannel CNI plugin and scripts read.
//!
//! Written as flanneld writes it — the same four lines in the same order, the subnet given as its
//! first host address — and atomically (a dot-file beside it, then rename), so a reader never sees
//! half a file. Read back at start-up to ask etcd for the same subnet again.
use ipnet::Ipv4Net;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
#[error("subnet file {path}: {source}")]
pub struct SubnetFileError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubnetEnv {
    pub network: Ipv4Net,
    pub subnet: Ipv4Net,
    pub mtu: u32,
    pub ipmasq: bool,
}

impl SubnetEnv {
    pub fn render(&self) -> String {
        let first = Ipv4Addr::from(u32::from(self.subnet.network()).wrapping_add(1));
        format!(
            "FLANNEL_NETWORK={}\nFLANNEL_SUBNET={}/{}\nFLANNEL_MTU={}\nFLANNEL_IPMASQ={}\n",
            self.network,
            first,
            self.subnet.prefix_len(),
            self.mtu,
            self.ipmasq
        )
    }

    pub fn write(&self, path: &Path) -> Result<(), SubnetFileError> {
        let err = |source| SubnetFileError { path: path.into(), source };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let tmp = path.with_file_name(format!(".{name}"));
        std::fs::write(&tmp, self.render()).map_err(err)?;
        std::fs::rename(&tmp, path).map_err(err)
    }
}

/// The subnet a previous run wrote (`FLANNEL_SUBNET`, back to its network address), if the file is
/// there and makes sense; anything else just means "no preference".
pub fn read_subnet(path: &Path) -> Option<Ipv4Net> {
    parse_subnet(&std::fs::read_to_string(path).ok()?)
}

pub fn parse_subnet(text: &str) -> Option<Ipv4Net> {
    let value = text.lines().find_map(|l| l.trim().strip_prefix("FLANNEL_SUBNET="))?;
    value.trim().parse::<Ipv4Net>().ok().map(|n| n.trunc())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> SubnetEnv {
        SubnetEnv { network: "10.244.0.0/16".parse().unwrap(), subnet: "10.244.3.0/24".parse().unwrap(), mtu: 1450, ipmasq: false }
    }

    #[test]
    fn renders_as_flanneld() {
        assert_eq!(env().render(), "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.3.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n");
    }

    #[test]
    fn subnet_reads_back() {
        assert_eq!(parse_subnet(&env().render()), Some("10.244.3.0/24".parse().unwrap()));
        assert_eq!(parse_subnet("FLANNEL_NETWORK=10.244.0.0/16\n"), None);
        assert_eq!(parse_subnet("FLANNEL_SUBNET=garbage\n"), None);
    }

    #[test]
    fn write_is_atomic_and_creates_the_directory() {
        let dir = std::env::temp_dir().join(format!("vtepd-subnet-env-{}", std::process::id()));
        let path = dir.join("flannel").join("subnet.env");
        env().write(&path).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), env().render());
        assert!(!path.with_file_name(".subnet.env").exists());
        assert_eq!(read_subnet(&path), Some(env().subnet));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
