//! The wait at the top of every worker loop: the device queue, the underlay socket and the
//! worker's mailbox in one poll(2), optionally spinning for a while after traffic (`--busy-poll`).
//! Without traffic or mail a worker sleeps for good: nothing but the mailbox needs it.
use super::mailbox::Mailbox;
use super::tap::TapQueue;
use crate::dataplane::Counters;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What ties a worker to the control side, the same for every kind of worker: the stop flag and
/// the mailbox that end or re-plumb its loop, the shared counters its batches flush into, and how
/// long it spins after traffic.
pub struct ControlLine {
    pub stop: Arc<AtomicBool>,
    /// Wakes the worker for the stop flag and brings a replacement queue after the device was
    /// deleted and recreated under us.
    pub mailbox: Mailbox,
    pub counters: Arc<Counters>,
    /// Keep polling without sleeping for this long after the last packet (zero: never spin).
    pub busy_poll: Duration,
}

/// A worker as the shared loop sees it: two sides to drain in batches, and the ways the control
/// side reaches it. The VXLAN and the IPIP worker differ only in what a batch does.
pub trait Forwarder {
    fn line(&self) -> &ControlLine;
    fn stop_requested(&self) -> bool {
        self.line().stop.load(Ordering::Relaxed)
    }
    /// Clears the mailbox's wake-up; a replacement device queue if one was posted.
    fn take_mail(&mut self) -> Option<TapQueue> {
        self.line().mailbox.take()
    }
    /// Puts the replacement queue in place; returns its descriptor for the poll set.
    fn set_device(&mut self, queue: TapQueue) -> RawFd;
    fn device_batch(&mut self);
    fn underlay_batch(&mut self);
    /// Adds the batch's counts to the line's shared counters.
    fn flush_counters(&mut self);
}

/// Runs a worker until its stop flag is set.
pub fn drive(w: &mut impl Forwarder, mut poller: Poller) {
    while !w.stop_requested() {
        let ready = poller.wait();
        if ready.mail {
            if let Some(q) = w.take_mail() {
                poller.set_device(w.set_device(q));
            }
            // The stop flag first; and what was ready may have been the old queue.
            continue;
        }
        if ready.device {
            w.device_batch();
        }
        if ready.underlay {
            w.underlay_batch();
        }
        if ready.any() {
            w.flush_counters();
        }
    }
    w.flush_counters();
}

/// Which side has something to read after [`Poller::wait`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ready {
    pub device: bool,
    pub underlay: bool,
    /// The control side rang: look at the stop flag and the mailbox.
    pub mail: bool,
}

impl Ready {
    pub fn any(&self) -> bool {
        self.device || self.underlay
    }
}

pub struct Poller {
    fds: [libc::pollfd; 3],
    busy_poll: Duration,
    hot_until: Option<Instant>,
}

impl Poller {
    /// `underlay` may be -1 (poll(2) ignores negative fds): an IPIP worker without the receive
    /// socket.
    pub fn new(device: RawFd, underlay: RawFd, line: &ControlLine) -> Poller {
        Poller::with_fds(device, underlay, line.mailbox.fd(), line.busy_poll)
    }

    fn with_fds(device: RawFd, underlay: RawFd, mailbox: RawFd, busy_poll: Duration) -> Poller {
        let fd = |fd| libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
        Poller { fds: [fd(device), fd(underlay), fd(mailbox)], busy_poll, hot_until: None }
    }

    /// A replacement device queue (the device was deleted and recreated).
    pub fn set_device(&mut self, fd: RawFd) {
        self.fds[0].fd = fd;
    }

    /// Waits for either side or the mailbox — while hot, not at all.
    pub fn wait(&mut self) -> Ready {
        // While hot, poll without sleeping: the answer to what we just forwarded (a ping reply, a
        // TCP ACK) is then picked up without a wake-up, the largest part of the latency a
        // userspace hop adds. That costs CPU while it lasts.
        let spinning = self.hot_until.is_some_and(|t| Instant::now() < t);
        let timeout = if spinning { 0 } else { -1 };
        // SAFETY: `fds` is a valid array of three pollfds for the duration of the call.
        let n = unsafe { libc::poll(self.fds.as_mut_ptr(), 3, timeout) };
        if n <= 0 {
            if spinning {
                // Give the CPU to anything runnable (the application, softirq work) and come
                // straight back: the core stays awake without starving others.
                // SAFETY: sched_yield has no arguments and no memory effects.
                unsafe { libc::sched_yield() };
            }
            return Ready::default();
        }
        if !self.busy_poll.is_zero() {
            self.hot_until = Some(Instant::now() + self.busy_poll);
        }
        let dev = self.fds[0].revents;
        if dev & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0 {
            // The device was deleted: stop polling the dead queue (it would wake us forever) until
            // the supervisor hands over a new one.
            self.fds[0].fd = -1;
        }
        Ready { device: dev != 0 && self.fds[0].fd >= 0, underlay: self.fds[1].revents != 0, mail: self.fds[2].revents != 0 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::{AsFd, AsRawFd, OwnedFd};
    use std::os::unix::net::{UnixDatagram, UnixStream};

    /// A worker over socket pairs: reads what each side has, and notes what the loop asked of it.
    struct Fake {
        device: TapQueue,
        underlay: UnixDatagram,
        line: ControlLine,
        /// Let the mail carry a stop, as the control side's stop does (flag set, then the bell).
        stop_on_mail: bool,
        log: Vec<String>,
    }

    impl Forwarder for Fake {
        fn line(&self) -> &ControlLine {
            &self.line
        }

        fn take_mail(&mut self) -> Option<TapQueue> {
            if self.stop_on_mail {
                self.line.stop.store(true, Ordering::Relaxed);
            }
            self.line.mailbox.take()
        }

        fn set_device(&mut self, queue: TapQueue) -> RawFd {
            self.device = queue;
            self.log.push("new device".into());
            self.device.as_fd().as_raw_fd()
        }

        fn device_batch(&mut self) {
            let mut buf = [0u8; 16];
            while let Ok(Some(n)) = self.device.recv(&mut buf) {
                self.log.push(format!("device {}", String::from_utf8_lossy(&buf[..n])));
            }
        }

        fn underlay_batch(&mut self) {
            let mut buf = [0u8; 16];
            let n = self.underlay.recv(&mut buf).unwrap();
            // The control side's "stop" arrives with traffic here, so the loop ends by itself.
            self.line.stop.store(&buf[..n] == b"stop", Ordering::Relaxed);
            self.log.push("underlay".into());
        }

        fn flush_counters(&mut self) {
            self.log.push("flush".into());
        }
    }

    /// A fake worker whose old device queue, new device queue (posted) and underlay each have one
    /// message waiting ("old", "new", and "stop", which stops it).
    fn fake_with_mail(stop_on_mail: bool) -> (Fake, Poller) {
        let (old, old_peer) = UnixDatagram::pair().unwrap();
        let (new, new_peer) = UnixDatagram::pair().unwrap();
        let (ul, ul_peer) = UnixDatagram::pair().unwrap();
        // Queues are non-blocking, as a TAP queue is: a batch reads until the queue is empty.
        new.set_nonblocking(true).unwrap();
        let (post, mailbox) = crate::io::mailbox::pair().unwrap();
        old_peer.send(b"old").unwrap();
        new_peer.send(b"new").unwrap();
        ul_peer.send(b"stop").unwrap();
        post.post(TapQueue::from_fd(OwnedFd::from(new)));
        let line = ControlLine { stop: Arc::default(), mailbox, counters: Arc::default(), busy_poll: Duration::ZERO };
        let poller = Poller::new(old.as_raw_fd(), ul.as_raw_fd(), &line);
        let device = TapQueue::from_fd(OwnedFd::from(old));
        (Fake { device, underlay: ul, line, stop_on_mail, log: Vec::new() }, poller)
    }

    #[test]
    fn mail_first_then_the_new_queue_then_a_last_flush() {
        let (mut w, poller) = fake_with_mail(false);
        drive(&mut w, poller);
        assert_eq!(w.log, ["new device", "device new", "underlay", "flush", "flush"]);
    }

    #[test]
    fn a_stop_that_comes_with_mail_ends_the_loop_before_any_batch() {
        let (mut w, poller) = fake_with_mail(true);
        drive(&mut w, poller);
        // What was ready in that round is not read: the stop flag is looked at first.
        assert_eq!(w.log, ["new device", "flush"]);
    }

    #[test]
    fn reports_the_readable_side_and_drops_a_hung_up_device() {
        let (dev, dev_peer) = UnixStream::pair().unwrap();
        let (ul, ul_peer) = UnixDatagram::pair().unwrap();
        let (post, mail) = crate::io::mailbox::pair().unwrap();
        let mut p = Poller::with_fds(dev.as_raw_fd(), ul.as_raw_fd(), mail.fd(), Duration::ZERO);
        ul_peer.send(b"x").unwrap();
        assert_eq!(p.wait(), Ready { device: false, underlay: true, mail: false });
        post.ring();
        assert!(p.wait().mail);
        assert!(mail.take().is_none());
        drop(dev_peer);
        let mut buf = [0u8; 4];
        ul.recv(&mut buf).unwrap();
        // The device's peer is gone: reported once as not readable, then no longer polled.
        assert!(!p.wait().device);
        assert_eq!(p.fds[0].fd, -1);
    }
}
