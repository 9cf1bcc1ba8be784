//! A listener's accept loop on a thread of its own, stopped on request.
//!
//! Blocking `accept()` has no timeout, so stopping takes a flag and a wake-up for the loop to see
//! it: the control socket shuts its listener down (accept() returns EINVAL), the metrics endpoint
//! connects to itself.
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

pub struct AcceptThread {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl AcceptThread {
    /// Runs `accept_loop` on a thread named `name`; the loop checks the flag it is given after
    /// every accepted connection and returns once it is set.
    pub fn spawn(name: &str, accept_loop: impl FnOnce(&AtomicBool) + Send + 'static) -> io::Result<AcceptThread> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new().name(name.into()).spawn(move || accept_loop(&flag))?;
        Ok(AcceptThread { stop, thread: Some(thread) })
    }

    /// Sets the flag, lets `wake` connect, and waits for the thread if the connection got through
    /// (if it did not, the thread stays blocked in accept() and ends with the process). Returns
    /// whether there was a thread to stop: false on every call after the first.
    pub fn stop(&mut self, wake: impl FnOnce() -> bool) -> bool {
        let Some(t) = self.thread.take() else { return false };
        self.stop.store(true, Ordering::Relaxed);
        if wake() {
            let _ = t.join();
        }
        true
    }
}
