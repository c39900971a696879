//! The prompt player (sans-IO): plays a list of prompts back to back, with optional silence
//! gaps, into the frames the RTP session asks for. Between prompts it gives comfort silence
//! or nothing (configurable). Barge-in stops an interruptible list within the current frame.
//! Filling a frame is a copy out of the prompt's pre-encoded bytes: nothing is allocated or
//! encoded per packet.

use crate::media::prompt::Prompt;
use crate::media::rtp::silence_byte;
use crate::sip::sdp::Codec;
use std::collections::VecDeque;
use std::sync::Arc;

/// What to send while no prompt plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IdleMode {
    /// Comfort silence: keeps NAT bindings and the PBX's RTP timeout alive.
    #[default]
    Silence,
    /// No packets at all.
    Nothing,
}

/// One entry of a play list.
#[derive(Debug, Clone)]
pub struct PlayItem {
    pub prompt: Arc<Prompt>,
    /// Whether a digit stops it (a legal notice may not be skippable).
    pub interruptible: bool,
    /// Silence after it, ms.
    pub gap_after_ms: u32,
}

impl PlayItem {
    pub fn new(prompt: Arc<Prompt>) -> Self {
        PlayItem {
            prompt,
            interruptible: true,
            gap_after_ms: 0,
        }
    }
}

/// What the player reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlayerEvent {
    Started(String),
    Finished(String),
    Interrupted(String),
    /// The whole list has been played (or interrupted); which list (`Player::play`'s id).
    ListDone(u64),
}

/// What went into a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fill {
    /// Prompt audio; `first` marks the first frame of a prompt (a talk-spurt).
    Audio { first: bool },
    /// Comfort silence.
    Silence,
    /// Send nothing for this frame.
    Nothing,
}

#[derive(Debug)]
struct Current {
    item: PlayItem,
    pos: usize,
    started: bool,
}

/// The player of one call.
#[derive(Debug, Default)]
pub struct Player {
    idle: IdleMode,
    queue: VecDeque<PlayItem>,
    current: Option<Current>,
    /// Silence samples still owed after the last prompt.
    gap: usize,
    /// The id of the list now playing (each `play` takes the next).
    list: u64,
    events: VecDeque<PlayerEvent>,
}

impl Player {
    pub fn new(idle: IdleMode) -> Self {
        Player {
            idle,
            ..Default::default()
        }
    }

    /// Replaces whatever is playing with `items` (an interrupted item is reported) and
    /// returns the list's id: its `ListDone` carries it, so the end of a list that was cut
    /// or replaced is never taken for the end of the next.
    pub fn play(&mut self, items: Vec<PlayItem>) -> u64 {
        self.stop_current(true);
        self.queue = items.into();
        self.gap = 0;
        self.list += 1;
        self.advance();
        self.list
    }

    fn stop_current(&mut self, interrupted: bool) {
        if let Some(c) = self.current.take() {
            if c.started && interrupted {
                self.events
                    .push_back(PlayerEvent::Interrupted(c.item.prompt.name().to_string()));
            }
        }
    }

    fn advance(&mut self) {
        if self.current.is_none() && self.gap == 0 {
            if let Some(item) = self.queue.pop_front() {
                self.current = Some(Current {
                    item,
                    pos: 0,
                    started: false,
                });
            }
        }
    }

    /// Is anything (prompt or gap) still to be played?
    pub fn is_playing(&self) -> bool {
        self.current.is_some() || self.gap > 0 || !self.queue.is_empty()
    }

    /// A digit arrived: stop the list if the current prompt allows it. Returns whether
    /// anything stopped.
    pub fn barge_in(&mut self) -> bool {
        let interruptible = match &self.current {
            Some(c) => c.item.interruptible,
            None => self.gap > 0 && !self.queue.is_empty(),
        };
        if !interruptible {
            return false;
        }
        self.stop_current(true);
        self.queue.clear();
        self.gap = 0;
        self.events.push_back(PlayerEvent::ListDone(self.list));
        true
    }

    /// Fills one frame of `buf.len()` samples in `codec`.
    pub fn fill(&mut self, codec: Codec, buf: &mut [u8]) -> Fill {
        let n = buf.len();
        if let Some(c) = &mut self.current {
            let first = !c.started;
            if first {
                c.started = true;
                self.events
                    .push_back(PlayerEvent::Started(c.item.prompt.name().to_string()));
            }
            let src = c.item.prompt.bytes(codec).get(c.pos..).unwrap_or_default();
            let k = src.len().min(n);
            let (audio, pad) = buf.split_at_mut(k);
            audio.copy_from_slice(src.get(..k).unwrap_or_default());
            pad.fill(silence_byte(codec));
            c.pos += k;
            if c.pos >= c.item.prompt.len() {
                self.finish_current();
            }
            return Fill::Audio { first };
        }
        if self.gap > 0 {
            self.gap = self.gap.saturating_sub(n);
            buf.fill(silence_byte(codec));
            if self.gap == 0 {
                self.advance();
                self.maybe_done();
            }
            return Fill::Silence;
        }
        match self.idle {
            IdleMode::Silence => {
                buf.fill(silence_byte(codec));
                Fill::Silence
            }
            IdleMode::Nothing => Fill::Nothing,
        }
    }

    fn finish_current(&mut self) {
        if let Some(c) = self.current.take() {
            self.events
                .push_back(PlayerEvent::Finished(c.item.prompt.name().to_string()));
            self.gap = c.item.gap_after_ms as usize * 8;
            self.advance();
            self.maybe_done();
        }
    }

    fn maybe_done(&mut self) {
        if !self.is_playing() {
            self.events.push_back(PlayerEvent::ListDone(self.list));
        }
    }

    /// Frames the sender had to skip (it woke too late): the audio skips with the clock.
    pub fn skip(&mut self, mut samples: usize) {
        while samples > 0 {
            if let Some(c) = &mut self.current {
                c.started = true;
                let left = c.item.prompt.len() - c.pos;
                let k = left.min(samples);
                c.pos += k;
                samples -= k;
                if c.pos >= c.item.prompt.len() {
                    self.finish_current();
                }
            } else if self.gap > 0 {
                let k = self.gap.min(samples);
                self.gap -= k;
                samples -= k;
                if self.gap == 0 {
                    self.advance();
                    self.maybe_done();
                }
            } else {
                break;
            }
        }
    }

    pub fn poll_event(&mut self) -> Option<PlayerEvent> {
        self.events.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prompt(name: &str, samples: usize) -> Arc<Prompt> {
        let pcm: Vec<i16> = (0..samples).map(|i| (i % 1000) as i16 * 10 + 100).collect();
        Arc::new(Prompt::from_pcm(name, &pcm))
    }

    fn events(p: &mut Player) -> Vec<PlayerEvent> {
        std::iter::from_fn(|| p.poll_event()).collect()
    }

    #[test]
    fn plays_back_to_back_with_gaps_then_idles() {
        let mut p = Player::new(IdleMode::Silence);
        let a = prompt("a", 400);
        let b = prompt("b", 160);
        p.play(vec![
            PlayItem {
                gap_after_ms: 40,
                ..PlayItem::new(a.clone())
            },
            PlayItem::new(b.clone()),
        ]);
        let mut buf = [0u8; 160];
        let mut fills = vec![];
        let mut audio = vec![];
        for _ in 0..8 {
            let f = p.fill(Codec::Pcmu, &mut buf);
            fills.push(f);
            if matches!(f, Fill::Audio { .. }) {
                audio.extend_from_slice(&buf);
            }
        }
        use Fill::*;
        assert_eq!(
            fills,
            vec![
                Audio { first: true },
                Audio { first: false },
                Audio { first: false },
                Silence,
                Silence,
                Audio { first: true },
                Silence,
                Silence
            ]
        );
        assert_eq!(&audio[..400], a.bytes(Codec::Pcmu));
        assert!(
            audio[400..480].iter().all(|b| *b == 0xFF),
            "padded with silence"
        );
        assert_eq!(&audio[480..640], b.bytes(Codec::Pcmu));
        assert_eq!(
            events(&mut p),
            vec![
                PlayerEvent::Started("a".into()),
                PlayerEvent::Finished("a".into()),
                PlayerEvent::Started("b".into()),
                PlayerEvent::Finished("b".into()),
                PlayerEvent::ListDone(1)
            ]
        );
    }

    #[test]
    fn barge_in_stops_within_the_frame_unless_not_interruptible() {
        let mut p = Player::new(IdleMode::Nothing);
        let notice = PlayItem {
            interruptible: false,
            ..PlayItem::new(prompt("notice", 320))
        };
        let id = p.play(vec![notice, PlayItem::new(prompt("enter_pin", 8000))]);
        let mut buf = [0u8; 160];
        p.fill(Codec::Pcma, &mut buf);
        assert!(!p.barge_in(), "legal notice plays on");
        p.fill(Codec::Pcma, &mut buf);
        assert_eq!(p.fill(Codec::Pcma, &mut buf), Fill::Audio { first: true });
        assert!(p.barge_in());
        assert_eq!(
            p.fill(Codec::Pcma, &mut buf),
            Fill::Nothing,
            "next frame is quiet"
        );
        let ev = events(&mut p);
        assert!(
            ev.contains(&PlayerEvent::Interrupted("enter_pin".into())),
            "{ev:?}"
        );
        assert_eq!(ev.last(), Some(&PlayerEvent::ListDone(id)));
        assert!(!p.is_playing());
        // A new list gets a new id: the cut list's end is not the new one's.
        let next = p.play(vec![PlayItem::new(prompt("try_again", 160))]);
        assert_ne!(next, id);
        p.fill(Codec::Pcma, &mut buf);
        assert_eq!(events(&mut p).last(), Some(&PlayerEvent::ListDone(next)));
    }

    #[test]
    fn skipping_late_frames_keeps_audio_on_the_clock() {
        let mut p = Player::new(IdleMode::Silence);
        let a = prompt("a", 1600);
        p.play(vec![PlayItem::new(a.clone())]);
        let mut buf = [0u8; 160];
        p.fill(Codec::Pcmu, &mut buf);
        p.skip(800);
        p.fill(Codec::Pcmu, &mut buf);
        assert_eq!(&buf[..], &a.bytes(Codec::Pcmu)[960..1120]);
    }
}
