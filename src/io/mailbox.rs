//! How the control side reaches a worker asleep in poll(2): a replacement device queue after the
//! device was recreated, or a nudge to look at the stop flag. The worker polls an eventfd next to
//! its queues, so it sleeps until there is traffic or news instead of waking on a timer to check
//! (an idle vtepd would otherwise cost every worker a few wake-ups a second, for nothing).
use super::tap::TapQueue;
use crossbeam_channel::{Receiver, Sender};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;

/// The control side's end: one per worker.
#[derive(Clone)]
pub struct Postbox {
    queue: Sender<TapQueue>,
    bell: Arc<OwnedFd>,
}

/// The worker's end.
pub struct Mailbox {
    queue: Receiver<TapQueue>,
    bell: Arc<OwnedFd>,
}

/// A connected pair: what is posted on the [`Postbox`] wakes the poll that watches [`Mailbox::fd`].
pub fn pair() -> io::Result<(Postbox, Mailbox)> {
    // SAFETY: eventfd takes no pointers; a non-negative result is a new descriptor we own.
    let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just created and is owned by nothing else.
    let bell = Arc::new(unsafe { OwnedFd::from_raw_fd(fd) });
    // One queue in flight: the worker takes it on the wake-up that comes with it.
    let (tx, rx) = crossbeam_channel::bounded(1);
    Ok((Postbox { queue: tx, bell: bell.clone() }, Mailbox { queue: rx, bell }))
}

impl Postbox {
    /// Hands over a replacement queue. A worker that has exited has dropped its mailbox: nothing to
    /// hand over then. One that has not taken the previous queue yet takes it on this wake-up, so
    /// the wait for the single slot is short.
    pub fn post(&self, q: TapQueue) {
        let _ = self.queue.send(q);
        self.ring();
    }

    /// Wakes the worker; it then looks at its stop flag and its mailbox.
    pub fn ring(&self) {
        let one = 1u64.to_ne_bytes();
        // SAFETY: writes 8 bytes from a live array to our own eventfd. It can only fail when the
        // counter is about to overflow, i.e. when the worker is already due to wake.
        unsafe { libc::write(self.bell.as_raw_fd(), one.as_ptr().cast(), one.len()) };
    }
}

impl Mailbox {
    /// The descriptor to poll for readability.
    pub fn fd(&self) -> RawFd {
        self.bell.as_raw_fd()
    }

    /// Clears the wake-up and returns a replacement queue if one was posted.
    pub fn take(&self) -> Option<TapQueue> {
        let mut count = [0u8; 8];
        // SAFETY: reads at most 8 bytes into a live array from our own non-blocking eventfd.
        unsafe { libc::read(self.bell.as_raw_fd(), count.as_mut_ptr().cast(), count.len()) };
        self.queue.try_recv().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn readable(fd: RawFd) -> bool {
        let mut p = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd, no wait.
        unsafe { libc::poll(&mut p, 1, 0) == 1 }
    }

    #[test]
    fn a_ring_wakes_until_taken_and_a_dropped_worker_is_no_error() {
        let (post, mail) = pair().unwrap();
        assert!(!readable(mail.fd()));
        post.ring();
        post.ring();
        assert!(readable(mail.fd()));
        assert!(mail.take().is_none());
        assert!(!readable(mail.fd()), "one take clears every ring before it");
        drop(mail);
        post.ring();
    }
}
