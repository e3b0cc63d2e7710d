//! One dispatcher's run: the boards advance one control period at a time; after each period
//! the answers finished in it travel board → broker → front, the requests that arrived travel
//! front → broker → board, and with headroom pull each board (un)subscribes to the shared
//! queue as its governor's headroom says.

use std::collections::{HashSet, VecDeque};

use super::board::{Finished, FleetBoard};
use super::wire::{Wire, WireEvent};
use super::{BoardFigures, Dispatcher, DispatcherRun, FleetError, FleetOptions, Request};
use crate::bench::governor::metrics::quantile;
use crate::telemetry::work::{
    AnswerChunk, WorkRequest, correlation, correlation_id, request_filter, request_topic,
};

/// Seconds per point of the plot series.
const PLOT_WINDOW_S: f64 = 10.0;

/// The state of one run between control periods.
struct Run<'a> {
    opts: &'a FleetOptions,
    kind: Dispatcher,
    boards: Vec<FleetBoard>,
    front: usize,
    answers_topic: String,
    request_topic: String,
    request_filter: String,
    subscribed: Vec<bool>,
    pending: VecDeque<Request>,
    next_board: usize,
    answered: HashSet<u64>,
    /// Answers received, with the board that made each.
    finished: Vec<(usize, Finished)>,
    per_board: Vec<(u64, u64)>,
    duplicates: u64,
    messages: u64,
    window_tokens: u64,
    tokens_series: Vec<(f64, f64)>,
    margin_series: Vec<(f64, f64)>,
}

/// Runs `kind` over `reqs` on fresh boards; `sustainable` is each board's sustainable rate.
pub(super) async fn run_dispatcher(
    wire: &mut Wire,
    opts: &FleetOptions,
    kind: Dispatcher,
    reqs: &[Request],
    sustainable: &[f64],
) -> Result<DispatcherRun, FleetError> {
    let mut boards = Vec::with_capacity(opts.boards.len());
    for setup in &opts.boards {
        boards.push(FleetBoard::new(setup, opts.period, opts.sim_step)?);
    }
    let period_s = opts.period.as_secs_f64();
    // Warm-up: idle, so each board starts in its steady state at its own ambient.
    let warm_ticks = (opts.warmup.as_secs_f64() / period_s).round() as u64;
    for k in 0..warm_ticks {
        let t = k as f64 * period_s - opts.warmup.as_secs_f64();
        for b in &mut boards {
            b.decide(t);
            b.advance(t);
        }
    }
    let model = format!("fleet-bench-{}", kind.name().replace('_', "-"));
    let n = boards.len();
    let mut run = Run {
        opts,
        kind,
        front: n,
        answers_topic: format!("thermo/bench/{model}/answers"),
        request_topic: request_topic(&model).map_err(|e| FleetError::Broker(e.to_string()))?,
        request_filter: request_filter(&model).map_err(|e| FleetError::Broker(e.to_string()))?,
        subscribed: vec![false; n],
        pending: VecDeque::new(),
        next_board: 0,
        answered: HashSet::new(),
        finished: Vec::new(),
        per_board: vec![(0, 0); n],
        duplicates: 0,
        messages: 0,
        window_tokens: 0,
        tokens_series: Vec::new(),
        margin_series: Vec::new(),
        boards,
    };
    run.subscribe_fixed(wire).await?;
    let end_cap = opts.span.as_secs_f64() * opts.max_span_factor;
    let (mut t, mut next) = (0.0, 0);
    let mut last_plot = 0.0;
    while t < end_cap && run.answered.len() < reqs.len() {
        run.period(wire, t).await?;
        t += period_s;
        while let Some(r) = reqs.get(next).filter(|r| r.at_s <= t) {
            run.pending.push_back(*r);
            next += 1;
        }
        run.dispatch(wire).await?;
        if t - last_plot >= PLOT_WINDOW_S - 1e-9 {
            run.plot_point(t, t - last_plot);
            last_plot = t;
        }
    }
    run.unsubscribe_all(wire).await?;
    Ok(run.figures(reqs.len(), sustainable))
}

impl Run<'_> {
    /// The board's own topic for round robin and least connections.
    fn board_topic(&self, board: usize) -> String {
        format!("thermo/bench/{}/board-{board}/requests", self.kind.name())
    }

    /// The front's answer topic, and with the front-side dispatchers each board's own topic.
    async fn subscribe_fixed(&mut self, wire: &mut Wire) -> Result<(), FleetError> {
        wire.subscribe(self.front, &self.answers_topic).await?;
        self.messages += 1;
        if self.kind != Dispatcher::HeadroomPull {
            for i in 0..self.boards.len() {
                wire.subscribe(i, &self.board_topic(i)).await?;
                self.messages += 1;
            }
        }
        Ok(())
    }

    async fn unsubscribe_all(&mut self, wire: &mut Wire) -> Result<(), FleetError> {
        wire.unsubscribe(self.front, &self.answers_topic).await?;
        for i in 0..self.boards.len() {
            if self.kind != Dispatcher::HeadroomPull {
                wire.unsubscribe(i, &self.board_topic(i)).await?;
            } else if self.subscribed[i] {
                wire.unsubscribe(i, &self.request_filter).await?;
            }
        }
        Ok(())
    }

    /// Every board decides and advances one period from `t`; each finished answer goes to
    /// the front through the broker.
    async fn period(&mut self, wire: &mut Wire, t: f64) -> Result<(), FleetError> {
        for i in 0..self.boards.len() {
            self.boards[i].decide(t);
            let done = self.boards[i].advance(t);
            for f in done {
                self.send_answer(wire, i, f).await?;
            }
        }
        Ok(())
    }

    /// Publishes `f` from board `i` to the response topic and counts it at the front.
    async fn send_answer(
        &mut self,
        wire: &mut Wire,
        i: usize,
        f: Finished,
    ) -> Result<(), FleetError> {
        let chunk = AnswerChunk {
            board: self.boards[i].label().to_string(),
            seq: 0,
            text: String::new(),
            tokens: f.tokens,
            done: true,
            ..AnswerChunk::default()
        };
        let topic = self.answers_topic.clone();
        wire.publish(i, &topic, chunk.to_payload(), correlation(f.id), None)
            .await?;
        let (_, ev) = wire.delivery(&topic, Some(i)).await?;
        self.messages += 1;
        let WireEvent::Message {
            payload,
            correlation: Some(c),
            ..
        } = ev
        else {
            return Err(FleetError::Broker(
                "an answer without correlation data".to_string(),
            ));
        };
        let id = correlation_id(&c).ok_or_else(|| {
            FleetError::Broker("an answer with foreign correlation data".to_string())
        })?;
        let chunk = AnswerChunk::parse(&payload).map_err(|e| FleetError::Broker(e.to_string()))?;
        if !self.answered.insert(id) {
            self.duplicates += 1;
            return Ok(());
        }
        self.per_board[i].0 += 1;
        self.per_board[i].1 += u64::from(chunk.tokens);
        self.window_tokens += u64::from(chunk.tokens);
        self.finished.push((i, f));
        Ok(())
    }

    /// Hands the waiting requests out as the dispatcher does.
    async fn dispatch(&mut self, wire: &mut Wire) -> Result<(), FleetError> {
        if self.kind == Dispatcher::HeadroomPull {
            return self.pull(wire).await;
        }
        while let Some(r) = self.pending.pop_front() {
            let n = self.boards.len();
            let board = match self.kind {
                Dispatcher::LeastConnections => (0..n)
                    .map(|k| (self.next_board + k) % n)
                    .min_by_key(|&i| self.boards[i].in_flight())
                    .unwrap_or(0),
                _ => self.next_board % n,
            };
            self.next_board = (board + 1) % n;
            let topic = self.board_topic(board);
            self.send_request(wire, &topic, r).await?;
        }
        Ok(())
    }

    /// Headroom pull: boards join or leave the shared queue by their headroom, then the front
    /// offers the waiting requests in order until no board takes one.
    async fn pull(&mut self, wire: &mut Wire) -> Result<(), FleetError> {
        for i in 0..self.boards.len() {
            self.follow_headroom(wire, i).await?;
        }
        while let Some(r) = self.pending.front().copied() {
            let topic = self.request_topic.clone();
            if !self.send_request(wire, &topic, r).await? {
                break;
            }
            self.pending.pop_front();
        }
        Ok(())
    }

    /// Subscribes board `i` to the shared queue when it wants work, unsubscribes it when not.
    async fn follow_headroom(&mut self, wire: &mut Wire, i: usize) -> Result<(), FleetError> {
        let o = self.opts;
        let wants = self.boards[i].wants_work(o.min_headroom_tokens, o.max_in_flight);
        if wants != self.subscribed[i] {
            if wants {
                wire.subscribe(i, &self.request_filter).await?;
            } else {
                wire.unsubscribe(i, &self.request_filter).await?;
            }
            self.subscribed[i] = wants;
            self.messages += 1;
        }
        Ok(())
    }

    /// Publishes `r` to `topic` and hands it to the board the broker delivered it to; `false`
    /// when no subscriber matched (the request stays with the front).
    async fn send_request(
        &mut self,
        wire: &mut Wire,
        topic: &str,
        r: Request,
    ) -> Result<bool, FleetError> {
        let req = WorkRequest {
            messages: serde_json::Value::Null,
            max_tokens: r.tokens,
            ..WorkRequest::default()
        };
        let front = self.front;
        let matched = wire
            .publish(
                front,
                topic,
                req.to_payload(),
                correlation(r.id),
                Some(self.answers_topic.clone()),
            )
            .await?;
        self.messages += 1;
        if !matched {
            if self.kind != Dispatcher::HeadroomPull {
                return Err(FleetError::Broker(format!(
                    "no board subscribed to {topic}"
                )));
            }
            return Ok(false);
        }
        let (board, ev) = wire.delivery(topic, Some(front)).await?;
        let WireEvent::Message {
            payload,
            correlation: c,
            ..
        } = ev
        else {
            return Ok(false);
        };
        let id = c.as_deref().and_then(correlation_id);
        let Some(b) = self.boards.get_mut(board) else {
            return Err(FleetError::Broker(format!(
                "a delivery to unknown link {board}"
            )));
        };
        match (WorkRequest::parse(&payload), id) {
            (Ok(req), Some(id)) => b.take(id, req.max_tokens, r.at_s),
            _ => {
                return Err(FleetError::Broker(
                    "a request garbled on the way".to_string(),
                ));
            }
        }
        if self.kind == Dispatcher::HeadroomPull {
            self.follow_headroom(wire, board).await?;
        }
        Ok(true)
    }

    fn plot_point(&mut self, t: f64, window_s: f64) {
        self.tokens_series
            .push((t, self.window_tokens as f64 / window_s.max(1e-9)));
        self.window_tokens = 0;
        let hottest = self
            .boards
            .iter()
            .map(|b| b.die_c() - b.setpoint_c())
            .fold(f64::NEG_INFINITY, f64::max);
        self.margin_series.push((t, hottest));
    }

    fn figures(self, requests: usize, sustainable: &[f64]) -> DispatcherRun {
        let mut latencies: Vec<f64> = self
            .finished
            .iter()
            .map(|(_, f)| f.finished_s - f.arrived_s)
            .collect();
        latencies.sort_by(f64::total_cmp);
        let end_s = self
            .finished
            .iter()
            .map(|(_, f)| f.finished_s)
            .fold(0.0, f64::max);
        let tokens: u64 = self.per_board.iter().map(|p| p.1).sum();
        let boards: Vec<BoardFigures> = self
            .boards
            .iter()
            .zip(&self.per_board)
            .zip(sustainable)
            .map(|((b, &(answers, tokens)), &s)| {
                let summary = b.summary();
                BoardFigures {
                    label: b.label().to_string(),
                    setpoint_c: b.setpoint_c(),
                    sustainable_tokens_per_s: s,
                    answers,
                    tokens,
                    max_temp_c: summary.max_temp_c,
                    wear_hours: summary.wear_hours,
                }
            })
            .collect();
        let over = self
            .finished
            .iter()
            .filter(|(i, f)| f.max_die_c > self.boards[*i].setpoint_c())
            .count() as u64;
        DispatcherRun {
            dispatcher: self.kind,
            fleet_tokens_per_s: tokens as f64 / end_s.max(1e-9),
            answered: self.answered.len() as u64,
            unanswered: (requests - self.answered.len().min(requests)) as u64,
            duplicates: self.duplicates,
            answers_over_setpoint: over,
            p50_latency_s: quantile(&latencies, 0.5),
            p99_latency_s: quantile(&latencies, 0.99),
            end_s,
            messages: self.messages,
            boards,
            tokens_series: self.tokens_series,
            margin_series: self.margin_series,
        }
    }
}
