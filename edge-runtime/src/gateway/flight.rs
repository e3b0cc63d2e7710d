//! The requests the gateway has on the queue, and what each answer chunk means for its
//! client: which board has the request, chunks repeated or lost, a board gone offline, the
//! one re-queue, and the part of a re-generated answer the client already has.
//!
//! Pure bookkeeping (no I/O): the link feeds it chunks and lost boards, the handlers read the
//! [`Delivery`]s it returns.

use std::collections::HashMap;

use serde_json::Value;

use crate::telemetry::work::{AnswerChunk, WorkRequest};

/// Most text kept per request to compare a re-generated answer with, bytes.
pub const MAX_DELIVERED_BYTES: usize = 4 << 20;

/// What a request's client gets next.
#[derive(Clone, Debug, PartialEq)]
pub enum Delivery {
    /// A board queued the request.
    Accepted(String),
    /// The board went offline and the request is on the queue again: whatever was gathered
    /// for a whole (non-streamed) answer is dropped.
    Restart,
    /// Text of the answer.
    Text(String),
    /// The answer is complete.
    Done(Box<Ending>),
    /// The request failed; the message says why.
    Failed(String),
}

/// How an answer ended, from its last chunk.
#[derive(Clone, Debug, PartialEq)]
pub struct Ending {
    /// The board that answered.
    pub board: String,
    /// OpenAI's `finish_reason`.
    pub finish_reason: String,
    /// Prompt tokens.
    pub prompt_tokens: u32,
    /// Generated tokens.
    pub completion_tokens: u32,
    /// The board's footprint of the answer.
    pub footprint: Option<Value>,
}

/// One request on the queue.
#[derive(Debug)]
struct Flight {
    request: WorkRequest,
    stream: bool,
    board: Option<String>,
    next_seq: u32,
    /// Text the client has.
    delivered: String,
    /// Bytes of the current board's answer so far (after a re-queue, compared with
    /// `delivered` up to its length).
    replayed: usize,
    /// The board sent the last chunk.
    ended: bool,
}

/// What a board going offline does to the requests it had.
#[derive(Debug, Default, PartialEq)]
pub struct Lost {
    /// Requests to publish again, marked re-queued.
    pub again: Vec<(u64, WorkRequest)>,
    /// Deliveries to their clients: a failure for a request re-queued before, a restart
    /// for a whole answer.
    pub failed: Vec<(u64, Delivery)>,
}

/// Why a request could not be put on the books.
#[derive(Debug, PartialEq)]
pub enum FlightError {
    /// As many requests as allowed are in flight.
    Full,
}

/// The requests in flight, by id.
#[derive(Debug)]
pub struct Flights {
    map: HashMap<u64, Flight>,
    max: usize,
    next_id: u64,
    /// Answers to cancel on their boards: (request id, board).
    cancels: Vec<(u64, String)>,
}

impl Flights {
    /// Books with room for `max` requests.
    pub fn new(max: usize) -> Self {
        Flights {
            map: HashMap::new(),
            max,
            next_id: 1,
            cancels: vec![],
        }
    }

    /// Puts `request` on the books; its id.
    pub fn insert(&mut self, request: WorkRequest, stream: bool) -> Result<u64, FlightError> {
        if self.map.len() >= self.max {
            return Err(FlightError::Full);
        }
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1).max(1);
        self.map.insert(
            id,
            Flight {
                request,
                stream,
                board: None,
                next_seq: 0,
                delivered: String::new(),
                replayed: 0,
                ended: false,
            },
        );
        Ok(id)
    }

    /// Takes the request off the books (answered, failed or its client gone); a board
    /// still generating its answer is to be cancelled ([`Flights::take_cancels`]).
    pub fn remove(&mut self, id: u64) {
        if let Some(f) = self.map.remove(&id)
            && let (Some(board), false) = (f.board, f.ended)
        {
            self.cancels.push((id, board));
        }
    }

    /// The answers to cancel on their boards since the last call: (request id, board).
    pub fn take_cancels(&mut self) -> Vec<(u64, String)> {
        std::mem::take(&mut self.cancels)
    }

    /// Requests in flight.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether no request is in flight.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The board that has request `id`, once one accepted it.
    pub fn board(&self, id: u64) -> Option<&str> {
        self.map.get(&id).and_then(|f| f.board.as_deref())
    }

    /// The request as published (again, after a re-queue).
    pub fn request(&self, id: u64) -> Option<&WorkRequest> {
        self.map.get(&id).map(|f| &f.request)
    }

    /// What `chunk` of request `id` means for its client; nothing for a request not on the
    /// books, a repeated chunk or a chunk from a board that no longer has the request.
    pub fn on_chunk(&mut self, id: u64, chunk: AnswerChunk) -> Vec<Delivery> {
        let Some(f) = self.map.get_mut(&id) else {
            return vec![];
        };
        let mut out = vec![];
        match &f.board {
            None => {
                f.board = Some(chunk.board.clone());
                out.push(Delivery::Accepted(chunk.board.clone()));
            }
            Some(b) if *b != chunk.board => {
                // Another board took the request too (it was published again after no
                // acceptance came in time): its work is wasted, stop it.
                if chunk.seq == 0 && !chunk.done {
                    self.cancels.push((id, chunk.board));
                }
                return vec![];
            }
            Some(_) => {}
        }
        if chunk.seq < f.next_seq {
            return out;
        }
        if chunk.seq > f.next_seq {
            out.push(Delivery::Failed(format!(
                "chunks {} to {} of the answer were lost on the way from board {}",
                f.next_seq,
                chunk.seq - 1,
                chunk.board
            )));
            return out;
        }
        f.next_seq = f.next_seq.saturating_add(1);
        f.ended |= chunk.done;
        if let Some(e) = chunk.error {
            out.push(Delivery::Failed(format!("board {}: {e}", chunk.board)));
            return out;
        }
        if !chunk.text.is_empty() {
            match f.fresh_text(&chunk.text) {
                Ok(Some(t)) => out.push(Delivery::Text(t)),
                Ok(None) => {}
                Err(why) => {
                    out.push(Delivery::Failed(why));
                    return out;
                }
            }
        }
        if chunk.done {
            out.push(Delivery::Done(Box::new(Ending {
                board: chunk.board,
                finish_reason: chunk.finish_reason.unwrap_or_else(|| "stop".into()),
                prompt_tokens: chunk.prompt_tokens.unwrap_or(0),
                completion_tokens: chunk.tokens,
                footprint: chunk.footprint,
            })));
        }
        out
    }

    /// `board` went offline: the requests it had go back on the queue once (their ids and
    /// requests to publish, marked re-queued); a request already re-queued fails instead.
    pub fn board_lost(&mut self, board: &str) -> Lost {
        let mut again = vec![];
        let mut failed = vec![];
        for (id, f) in &mut self.map {
            if f.board.as_deref() != Some(board) {
                continue;
            }
            if f.request.requeued {
                failed.push((
                    *id,
                    Delivery::Failed(format!(
                        "board {board} went offline with the request, which had been re-queued once already"
                    )),
                ));
                continue;
            }
            f.requeue();
            if !f.stream {
                failed.push((*id, Delivery::Restart));
            }
            again.push((*id, f.request.clone()));
        }
        Lost { again, failed }
    }

    /// Request `id` was not accepted in time: the request to publish once more, or `None`
    /// when it was re-queued already or a board has it.
    pub fn requeue_unaccepted(&mut self, id: u64) -> Option<WorkRequest> {
        let f = self.map.get_mut(&id)?;
        if f.board.is_some() || f.request.requeued {
            return None;
        }
        f.requeue();
        Some(f.request.clone())
    }
}

impl Flight {
    fn requeue(&mut self) {
        self.request.requeued = true;
        self.board = None;
        self.ended = false;
        self.next_seq = 0;
        self.replayed = 0;
        if !self.stream {
            self.delivered.clear();
        }
    }

    /// The part of `text` the client does not have yet, after checking that the part it has
    /// is the same as what an earlier board sent.
    fn fresh_text(&mut self, text: &str) -> Result<Option<String>, String> {
        let have = self.delivered.len();
        let start = self.replayed;
        self.replayed = start.saturating_add(text.len());
        let fresh = if start < have {
            let overlap = (have - start).min(text.len());
            if self.delivered.as_bytes()[start..start + overlap] != text.as_bytes()[..overlap] {
                return Err(
                    "the request's board went offline and the board that took it over wrote a \
                     different answer from the part already sent"
                        .into(),
                );
            }
            match text.get(overlap..) {
                Some("") => return Ok(None),
                Some(rest) => rest,
                None => return Err("a re-generated answer split a character".into()),
            }
        } else {
            text
        };
        if self.delivered.len() + fresh.len() > MAX_DELIVERED_BYTES {
            return Err(format!(
                "the answer is longer than {MAX_DELIVERED_BYTES} bytes"
            ));
        }
        self.delivered.push_str(fresh);
        Ok(Some(fresh.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(board: &str, seq: u32, text: &str) -> AnswerChunk {
        AnswerChunk {
            board: board.into(),
            seq,
            text: text.into(),
            tokens: seq,
            ..AnswerChunk::default()
        }
    }

    fn last(board: &str, seq: u32) -> AnswerChunk {
        AnswerChunk {
            done: true,
            finish_reason: Some("length".into()),
            prompt_tokens: Some(5),
            ..chunk(board, seq, "")
        }
    }

    fn texts(d: &[Delivery]) -> String {
        d.iter()
            .filter_map(|d| match d {
                Delivery::Text(t) => Some(t.as_str()),
                _ => None,
            })
            .collect()
    }

    fn request() -> WorkRequest {
        WorkRequest {
            max_tokens: 8,
            ..WorkRequest::default()
        }
    }

    #[test]
    fn an_answer_is_accepted_streamed_and_ended_once() {
        let mut f = Flights::new(4);
        let id = f.insert(request(), true).unwrap_or(0);
        assert_eq!(
            f.on_chunk(id, chunk("a", 0, "")),
            vec![Delivery::Accepted("a".into())]
        );
        assert_eq!(f.board(id), Some("a"));
        assert_eq!(texts(&f.on_chunk(id, chunk("a", 1, "Hel"))), "Hel");
        // A repeated chunk (QoS 1 redelivery) and another board's chunk change nothing.
        assert!(f.on_chunk(id, chunk("a", 1, "Hel")).is_empty());
        assert!(f.on_chunk(id, chunk("b", 2, "zzz")).is_empty());
        assert_eq!(texts(&f.on_chunk(id, chunk("a", 2, "lo"))), "lo");
        let end = f.on_chunk(id, last("a", 3));
        assert!(
            matches!(&end[..], [Delivery::Done(e)] if e.board == "a" && e.finish_reason == "length" && e.prompt_tokens == 5)
        );
        assert!(f.on_chunk(7777, chunk("a", 0, "")).is_empty());
    }

    #[test]
    fn a_lost_chunk_fails_the_answer_instead_of_leaving_a_hole() {
        let mut f = Flights::new(4);
        let id = f.insert(request(), true).unwrap_or(0);
        f.on_chunk(id, chunk("a", 0, ""));
        let d = f.on_chunk(id, chunk("a", 3, "x"));
        assert!(matches!(&d[..], [Delivery::Failed(m)] if m.contains("lost")));
    }

    #[test]
    fn a_board_lost_mid_answer_is_requeued_once_and_the_client_gets_no_text_twice() {
        let mut f = Flights::new(4);
        let id = f.insert(request(), true).unwrap_or(0);
        f.on_chunk(id, chunk("a", 0, ""));
        f.on_chunk(id, chunk("a", 1, "The cat"));
        f.on_chunk(id, chunk("a", 2, " sat"));
        let Lost { again, failed } = f.board_lost("a");
        assert_eq!(again.len(), 1);
        assert!(again[0].1.requeued && failed.is_empty());
        assert_eq!(f.board(id), None);
        // A late chunk from the lost board is not the answer any more.
        let d = f.on_chunk(id, chunk("b", 0, ""));
        assert_eq!(d, vec![Delivery::Accepted("b".into())]);
        assert!(f.on_chunk(id, chunk("a", 3, " on")).is_empty());
        // The new board's answer repeats what was sent: only what follows reaches the client.
        assert_eq!(texts(&f.on_chunk(id, chunk("b", 1, "The"))), "");
        assert_eq!(texts(&f.on_chunk(id, chunk("b", 2, " cat sat on"))), " on");
        assert_eq!(
            texts(&f.on_chunk(id, chunk("b", 3, " the mat"))),
            " the mat"
        );
        // A second loss fails the request rather than queueing it a third time.
        let Lost { again, failed } = f.board_lost("b");
        assert!(again.is_empty());
        assert!(matches!(&failed[..], [(i, Delivery::Failed(_))] if *i == id));
    }

    #[test]
    fn a_requeued_answer_that_differs_from_what_was_sent_fails() {
        let mut f = Flights::new(4);
        let id = f.insert(request(), true).unwrap_or(0);
        f.on_chunk(id, chunk("a", 0, ""));
        f.on_chunk(id, chunk("a", 1, "The cat"));
        f.board_lost("a");
        f.on_chunk(id, chunk("b", 0, ""));
        let d = f.on_chunk(id, chunk("b", 1, "A dog"));
        assert!(matches!(&d[..], [Delivery::Failed(m)] if m.contains("different")));
    }

    #[test]
    fn a_whole_answer_restarts_on_requeue() {
        let mut f = Flights::new(4);
        let id = f.insert(request(), false).unwrap_or(0);
        f.on_chunk(id, chunk("a", 0, ""));
        f.on_chunk(id, chunk("a", 1, "The cat"));
        let Lost { again, failed } = f.board_lost("a");
        assert_eq!(again.len(), 1);
        assert_eq!(failed, vec![(id, Delivery::Restart)]);
        f.on_chunk(id, chunk("b", 0, ""));
        assert_eq!(texts(&f.on_chunk(id, chunk("b", 1, "A dog"))), "A dog");
    }

    #[test]
    fn a_board_whose_answer_nobody_waits_for_any_more_is_cancelled() {
        let mut f = Flights::new(4);
        let a = f.insert(request(), true).unwrap_or(0);
        f.on_chunk(a, chunk("x", 0, ""));
        // A second board accepting the same request late is told to stop.
        assert!(f.on_chunk(a, chunk("y", 0, "")).is_empty());
        assert_eq!(f.take_cancels(), vec![(a, "y".to_string())]);
        // The client leaves mid-answer: its board is told to stop.
        f.remove(a);
        assert_eq!(f.take_cancels(), vec![(a, "x".to_string())]);
        // A finished answer, or one no board accepted, needs no cancel.
        let b = f.insert(request(), true).unwrap_or(0);
        f.on_chunk(b, chunk("x", 0, ""));
        f.on_chunk(b, last("x", 1));
        f.remove(b);
        let c = f.insert(request(), true).unwrap_or(0);
        f.remove(c);
        assert!(f.take_cancels().is_empty());
    }

    #[test]
    fn an_unaccepted_request_is_published_again_once_and_the_books_are_bounded() {
        let mut f = Flights::new(2);
        let id = f.insert(request(), true).unwrap_or(0);
        assert!(f.requeue_unaccepted(id).is_some_and(|r| r.requeued));
        assert!(f.requeue_unaccepted(id).is_none());
        assert!(f.insert(request(), true).is_ok());
        assert_eq!(f.insert(request(), true), Err(FlightError::Full));
        f.remove(id);
        assert_eq!(f.len(), 1);
    }
}
