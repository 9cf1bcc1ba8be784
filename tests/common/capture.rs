//! Packet captures (tcpdump) and reading them back (tshark).
use super::*;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::JoinHandle;

/// tcpdump's ring, in KiB. On a device with offloads libpcap sizes each ring slot for a 256 KiB
/// super-frame, so its default 2 MiB holds eight packets: a tcpdump descheduled for a millisecond
/// on a loaded machine loses packets, and a test counting them fails.
const RING_KIB: &str = "65536";

/// A `tcpdump -w` running in a namespace until [`Capture::finish`] (or drop, which kills it).
pub struct Capture {
    child: Option<Child>,
    path: PathBuf,
    stderr: Captured,
    reader: Option<JoinHandle<()>>,
}

impl Capture {
    /// Starts capturing on `dev` in `ns` into `dir/name` with the pcap `filter`, and waits until
    /// tcpdump says it is listening, so nothing sent after this returns is missed. Immediate mode:
    /// otherwise libpcap hands packets over a ring block at a time, and a capture stopped right
    /// after the traffic loses the last block.
    pub fn start(ns: &Netns, dev: &str, dir: &TempDir, name: &str, filter: &str) -> Capture {
        let path = dir.path().join(name);
        let path_s = path.display().to_string();
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns.name(), "tcpdump", "-i", dev, "-n", "-U", "--immediate-mode", "-B", RING_KIB, "-w", &path_s, filter])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn tcpdump");
        let (stderr, reader) = collect_output(child.stderr.take().unwrap());
        let cap = Capture { child: Some(child), path, stderr, reader: Some(reader) };
        wait_until(&format!("tcpdump listening on {dev} in {}", ns.name()), || {
            cap.stderr.lock().unwrap().contains("listening on")
        });
        cap
    }

    /// Packets written to the pcap file so far (`-U` flushes each one as it is captured).
    pub fn packets(&self) -> usize {
        std::fs::read(&self.path).map_or(0, |b| count_pcap_records(&b))
    }

    /// Waits until the capture holds at least `n` packets. A counter in vtepd moves when its
    /// write to the device returns, but the packet reaches tcpdump's socket later, from the
    /// receive softirq: stopping tcpdump at once can lose the last few.
    pub fn wait_for_packets(&self, n: usize) {
        wait_until(&format!("{n} packets captured in {}", self.path.display()), || self.packets() >= n);
    }

    /// Stops tcpdump (SIGINT, so it flushes) and returns the pcap file's path. It waits first
    /// until the file has stopped growing for a moment (see [`Capture::wait_for_packets`]).
    pub fn finish(mut self) -> PathBuf {
        let deadline = Instant::now() + Duration::from_secs(3);
        let mut last = self.packets();
        while Instant::now() < deadline {
            thread::sleep(Duration::from_millis(150));
            let now = self.packets();
            if now == last {
                break;
            }
            last = now;
        }
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill(2) on our own child, which has not been reaped yet.
            unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
            let _ = child.wait();
        }
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        let stderr = self.stderr.lock().unwrap().clone();
        let lost = stderr.lines().find(|l| l.contains("dropped by kernel") && !l.starts_with("0 "));
        assert!(lost.is_none(), "the capture {} is incomplete: {lost:?}", self.path.display());
        self.path.clone()
    }
}

/// Records in a little-endian libpcap file (24-byte file header, then a 16-byte header holding
/// the captured length at bytes 8..12 before each packet); a record cut short is not counted.
fn count_pcap_records(file: &[u8]) -> usize {
    let mut at = 24;
    let mut n = 0;
    while let Some(h) = file.get(at..at + 16) {
        let caplen = u32::from_le_bytes([h[8], h[9], h[10], h[11]]) as usize;
        at += 16 + caplen;
        if at > file.len() {
            break;
        }
        n += 1;
    }
    n
}

impl Drop for Capture {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Decodes a pcap with tshark into one line per packet of the given `-e` fields, separated by tabs;
/// a field that occurs twice (the outer and inner IP header of IPIP) is joined with commas.
pub fn tshark_fields(pcap: &Path, fields: &[&str]) -> Vec<String> {
    tshark_fields_as(pcap, &[], fields)
}

/// [`tshark_fields`] with tshark's "decode as" rules, e.g. `udp.port==8472,vxlan` (tshark knows
/// VXLAN on port 4789 only; Flannel uses 8472).
pub fn tshark_fields_as(pcap: &Path, decode_as: &[&str], fields: &[&str]) -> Vec<String> {
    let mut args = vec!["-r".to_string(), pcap.display().to_string(), "-T".into(), "fields".into()];
    for d in decode_as {
        args.push("-d".into());
        args.push((*d).into());
    }
    for f in fields {
        args.push("-e".into());
        args.push((*f).into());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    run_ok("tshark", &args).lines().map(str::to_owned).collect()
}
