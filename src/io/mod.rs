//! I/O drivers around the sans-IO core: TAP queues, underlay UDP sockets, and the worker loop that
//! moves batches between them. Every `unsafe` block of the crate lives under this module but one
//! (the call into the AVX2 checksum loop, in `wire::checksum`).
pub mod gro;
pub mod ifaddr;
pub mod ipip_worker;
pub mod mailbox;
pub mod netlink;
pub mod poll;
pub mod privilege;
pub mod raw;
pub mod steer;
pub mod tap;
pub mod tun;
pub mod udp;
pub mod unix;
pub mod worker;

use std::io;

/// Retries a syscall wrapper on EINTR.
pub(crate) fn retry<T>(mut f: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    loop {
        match f() {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            r => return r,
        }
    }
}

/// Hands the allocator's free memory back to the system. Parsing a large config builds a tree
/// several times the file's size; once it is dropped glibc would keep those pages for the life of
/// the daemon (127 MB resident after a 100k-peer file, 4 MB after this).
pub fn release_free_memory() {
    // SAFETY: malloc_trim only walks glibc's own heap; no pointer of ours is involved.
    unsafe { libc::malloc_trim(0) };
}

/// Asks for transparent huge pages under a large buffer not yet touched (the kernel copies every
/// packet into or out of it: 4 KB pages cost a TLB miss every 4 KB, doubly so in a VM).
fn advise_huge_pages(buf: &[u8]) {
    const HUGE: usize = 2 << 20;
    let start = (buf.as_ptr() as usize).next_multiple_of(HUGE);
    let end = (buf.as_ptr() as usize + buf.len()) / HUGE * HUGE;
    if end > start {
        // SAFETY: advice only, on whole huge pages inside our own allocation; no memory changes.
        unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE) };
    }
}

/// Fixed-size packet buffers in one allocation, made once per worker and reused for every batch.
pub struct Slots {
    data: Vec<u8>,
    stride: usize,
}

impl Slots {
    pub fn new(count: usize, size: usize) -> Slots {
        // Round up to a cache line so no two slots share one.
        let stride = size.div_ceil(64) * 64;
        let data = vec![0; count * stride];
        advise_huge_pages(&data);
        Slots { data, stride }
    }

    pub fn count(&self) -> usize {
        self.data.len() / self.stride
    }

    pub fn size(&self) -> usize {
        self.stride
    }

    #[inline]
    pub fn get(&self, i: usize) -> &[u8] {
        &self.data[i * self.stride..(i + 1) * self.stride]
    }

    #[inline]
    pub fn get_mut(&mut self, i: usize) -> &mut [u8] {
        &mut self.data[i * self.stride..(i + 1) * self.stride]
    }
}
