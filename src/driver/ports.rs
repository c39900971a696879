//! The RTP port pool: even ports from the configured range, handed out least recently
//! used first so a late packet for an old call rarely reaches a new one. The odd port above
//! each is that call's RTCP port (RFC 3550 §11); it is not in the pool.

use std::collections::VecDeque;
use std::sync::Mutex;

/// A pool of even UDP ports. One lock per call set-up and tear-down, never per packet.
#[derive(Debug)]
pub struct PortPool {
    free: Mutex<VecDeque<u16>>,
}

impl PortPool {
    pub fn new(min: u16, max: u16) -> Self {
        let free = (min..=max).step_by(2).filter(|p| p % 2 == 0).collect();
        PortPool {
            free: Mutex::new(free),
        }
    }

    pub fn take(&self) -> Option<u16> {
        self.free.lock().ok()?.pop_front()
    }

    pub fn give_back(&self, port: u16) {
        if let Ok(mut f) = self.free.lock() {
            f.push_back(port);
        }
    }

    pub fn available(&self) -> usize {
        self.free.lock().map(|f| f.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn even_ports_reused_last() {
        let p = PortPool::new(10000, 10006);
        assert_eq!(p.available(), 4);
        let a = p.take().unwrap();
        assert_eq!(a, 10000);
        p.give_back(a);
        assert_eq!(p.take(), Some(10002));
        assert_eq!(p.take(), Some(10004));
        assert_eq!(p.take(), Some(10006));
        assert_eq!(p.take(), Some(10000));
        assert_eq!(p.take(), None);
    }
}
