//! What `rjob watch` shows, and how keys change it: a pure model, drawn with ratatui, so it is
//! unit-tested on a test backend without a terminal or a daemon.

use std::collections::{HashMap, VecDeque};

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Borders, Paragraph, Row, Table};
use ratatui::Frame;
use rjob_proto::v1 as pb;

use crate::state::State;

/// Lines kept of the followed host's output.
const FOLLOW_LINES: usize = 2000;

/// What a key asks for beyond changing the view.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    None,
    Quit,
    /// Follow this child's output (its index and label).
    Follow(u32, String),
    /// Stop following.
    Unfollow,
}

#[derive(Default)]
pub struct Model {
    pub job: pb::JobInfo,
    /// Last output line per child index.
    pub last_line: HashMap<u32, String>,
    pub filter: String,
    pub editing_filter: bool,
    pub failed_only: bool,
    /// Selected row among the shown hosts, and the first shown row.
    pub selected: usize,
    pub offset: usize,
    /// The followed child and its lines (whole lines, escaped), with its unfinished line.
    pub following: Option<(u32, String)>,
    pub follow_lines: VecDeque<String>,
    follow_partial: Vec<u8>,
    /// Rows the table has room for, from the last draw.
    pub table_rows: usize,
    /// Why the view is not up to date (the job could not be listed), shown in the header.
    pub trouble: Option<String>,
    /// Width of the host column.
    host_width: usize,
    /// Time "now" in ms since the epoch, for durations of running hosts.
    pub now_ms: i64,
}

impl Model {
    /// The children the filter and `f` let through, in job order.
    pub fn shown(&self) -> Vec<&pb::ChildInfo> {
        self.job
            .children
            .iter()
            .filter(|c| !self.failed_only || State::from_pb(c.state) == State::Failed)
            .filter(|c| self.filter.is_empty() || c.host.contains(&self.filter))
            .collect()
    }

    /// The children on screen now: only their last lines are read.
    pub fn visible(&self) -> Vec<(u32, String)> {
        self.shown()
            .into_iter()
            .skip(self.offset)
            .take(self.table_rows.max(1))
            .map(|c| (c.index, c.host.clone()))
            .collect()
    }

    /// Keeps the selection on a shown row and the selected row on screen.
    fn clamp(&mut self) {
        let n = self.shown().len();
        self.selected = self.selected.min(n.saturating_sub(1));
        let rows = self.table_rows.max(1);
        if self.selected < self.offset {
            self.offset = self.selected;
        } else if self.selected >= self.offset + rows {
            self.offset = self.selected + 1 - rows;
        }
        self.offset = self.offset.min(n.saturating_sub(1));
    }

    pub fn set_job(&mut self, job: pb::JobInfo) {
        // The host column fits the widest host of the job (at most 40 columns): measured once
        // per listing, not on every draw.
        self.host_width = job
            .children
            .iter()
            .map(|c| super::super::cells::width(&crate::escape::text(&c.host)))
            .max()
            .unwrap_or(4)
            .clamp(4, 40);
        self.job = job;
        self.clamp();
    }

    /// Output of the followed child.
    pub fn follow_output(&mut self, data: &[u8]) {
        self.follow_partial.extend_from_slice(data);
        while let Some(pos) = memchr::memchr(b'\n', &self.follow_partial) {
            let line: Vec<u8> = self.follow_partial.drain(..=pos).collect();
            self.push_follow_line(&line[..line.len() - 1]);
        }
        if self.follow_partial.len() > crate::output::MAX_LINE {
            let line = std::mem::take(&mut self.follow_partial);
            self.push_follow_line(&line);
        }
    }

    fn push_follow_line(&mut self, line: &[u8]) {
        let text = String::from_utf8_lossy(line);
        self.follow_lines
            .push_back(crate::escape::text(&text).into_owned());
        while self.follow_lines.len() > FOLLOW_LINES {
            self.follow_lines.pop_front();
        }
    }

    pub fn key(&mut self, key: KeyEvent) -> Action {
        if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
            return Action::Quit;
        }
        if self.editing_filter {
            match key.code {
                KeyCode::Enter => self.editing_filter = false,
                KeyCode::Esc => {
                    self.editing_filter = false;
                    self.filter.clear();
                }
                KeyCode::Backspace => {
                    self.filter.pop();
                }
                KeyCode::Char(c) if !c.is_control() => self.filter.push(c),
                _ => {}
            }
            self.selected = 0;
            self.offset = 0;
            return Action::None;
        }
        if self.following.is_some() {
            return match key.code {
                KeyCode::Char('q') => Action::Quit,
                KeyCode::Esc | KeyCode::Enter | KeyCode::Backspace => {
                    self.following = None;
                    self.follow_lines.clear();
                    self.follow_partial.clear();
                    Action::Unfollow
                }
                _ => Action::None,
            };
        }
        let page = self.table_rows.max(1);
        match key.code {
            KeyCode::Char('q') => return Action::Quit,
            KeyCode::Char('/') => {
                self.editing_filter = true;
                self.filter.clear();
            }
            KeyCode::Char('f') => {
                self.failed_only = !self.failed_only;
                self.selected = 0;
                self.offset = 0;
            }
            KeyCode::Esc => self.filter.clear(),
            KeyCode::Down | KeyCode::Char('j') => self.selected += 1,
            KeyCode::Up | KeyCode::Char('k') => self.selected = self.selected.saturating_sub(1),
            KeyCode::PageDown => self.selected += page,
            KeyCode::PageUp => self.selected = self.selected.saturating_sub(page),
            KeyCode::Home | KeyCode::Char('g') => self.selected = 0,
            KeyCode::End | KeyCode::Char('G') => self.selected = usize::MAX,
            KeyCode::Enter => {
                let chosen = self.shown().get(self.selected).map(|c| (c.index, c.host.clone()));
                if let Some((index, host)) = chosen {
                    self.following = Some((index, host.clone()));
                    self.follow_lines.clear();
                    self.follow_partial.clear();
                    return Action::Follow(index, host);
                }
            }
            _ => {}
        }
        self.clamp();
        Action::None
    }

    /// Counts per state, in the order of [`State::ALL`]: `Running 12 · Completed 50`.
    fn counts(&self) -> String {
        let mut counts: Vec<String> = Vec::new();
        for state in State::ALL {
            let n = self
                .job
                .children
                .iter()
                .filter(|c| State::from_pb(c.state) == state)
                .count();
            if n > 0 {
                counts.push(format!("{state} {n}"));
            }
        }
        counts.join(" · ")
    }

    fn duration(&self, c: &pb::ChildInfo) -> String {
        if c.started_at_ms <= 0 {
            return String::new();
        }
        let end = if c.ended_at_ms > 0 {
            c.ended_at_ms
        } else {
            self.now_ms
        };
        let ms = (end - c.started_at_ms).max(0);
        format!("{:.1}s", ms as f64 / 1000.0)
    }

    pub fn draw(&mut self, frame: &mut Frame) {
        let [header, body] =
            Layout::vertical([Constraint::Length(4), Constraint::Min(1)]).areas(frame.area());
        self.draw_header(frame, header);
        // The table's own header row takes one line.
        self.table_rows = usize::from(body.height.saturating_sub(1)).max(1);
        self.clamp();
        match self.following.clone() {
            Some((_, host)) => self.draw_follow(frame, body, &host),
            None => self.draw_table(frame, body),
        }
    }

    fn draw_header(&self, frame: &mut Frame, area: Rect) {
        let job = &self.job;
        let title = format!(
            "Job {} {} · {} · {} hosts · throttle {}",
            job.id,
            crate::escape::text(&job.name),
            State::from_pb(job.state),
            job.children.len(),
            job.throttle_limit
        );
        let mut view = format!("{} shown", self.shown().len());
        if self.failed_only {
            view.push_str(" · failed only");
        }
        if self.editing_filter {
            view.push_str(&format!(" · filter: {}_", crate::escape::text(&self.filter)));
        } else if !self.filter.is_empty() {
            view.push_str(&format!(" · filter: {}", crate::escape::text(&self.filter)));
        }
        let keys = if self.following.is_some() {
            "Esc back · q quit"
        } else {
            "/ filter · f failed only · Enter follow · q quit"
        };
        let second = match &self.trouble {
            Some(why) => Line::styled(
                format!("not up to date: {}", crate::escape::text(why)),
                Style::new().fg(Color::Red),
            ),
            None => Line::raw(self.counts()),
        };
        let lines = vec![
            Line::styled(title, Style::new().add_modifier(Modifier::BOLD)),
            second,
            Line::raw(format!("{view}    [{keys}]")),
        ];
        let block = Block::new().borders(Borders::BOTTOM);
        frame.render_widget(Paragraph::new(lines).block(block), area);
    }

    fn draw_table(&self, frame: &mut Frame, area: Rect) {
        let shown = self.shown();
        let rows: Vec<Row> = shown
            .iter()
            .enumerate()
            .skip(self.offset)
            .take(self.table_rows)
            .map(|(i, c)| {
                let state = State::from_pb(c.state);
                let exit = match (c.exit_code, c.signal) {
                    (Some(code), _) => code.to_string(),
                    (None, Some(sig)) => format!("sig {sig}"),
                    _ => String::new(),
                };
                let last = self
                    .last_line
                    .get(&c.index)
                    .map(|l| crate::escape::text(l).into_owned())
                    .unwrap_or_default();
                let mut style = match state {
                    State::Failed => Style::new().fg(Color::Red),
                    State::Completed => Style::new().fg(Color::Green),
                    _ => Style::new(),
                };
                if i == self.selected {
                    style = style.add_modifier(Modifier::REVERSED);
                }
                Row::new(vec![
                    crate::escape::text(&c.host).into_owned(),
                    state.to_string(),
                    self.duration(c),
                    exit,
                    last,
                ])
                .style(style)
            })
            .collect();
        let widths = [
            Constraint::Length(u16::try_from(self.host_width.max(4)).unwrap_or(40)),
            Constraint::Length(12),
            Constraint::Length(9),
            Constraint::Length(6),
            Constraint::Min(10),
        ];
        let header = Row::new(vec!["Host", "State", "Duration", "Exit", "Last output"])
            .style(Style::new().add_modifier(Modifier::BOLD));
        frame.render_widget(Table::new(rows, widths).header(header), area);
    }

    fn draw_follow(&self, frame: &mut Frame, area: Rect, host: &str) {
        let block = Block::new()
            .borders(Borders::TOP)
            .title(format!("{} · following", crate::escape::text(host)));
        let room = usize::from(area.height.saturating_sub(1));
        let skip = self.follow_lines.len().saturating_sub(room);
        let lines: Vec<Line> = self
            .follow_lines
            .iter()
            .skip(skip)
            .map(|l| Line::raw(l.clone()))
            .collect();
        frame.render_widget(Paragraph::new(lines).block(block), area);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests

    use super::*;
    use ratatui::backend::TestBackend;
    use ratatui::Terminal;

    fn model(n: u32) -> Model {
        let children = (0..n)
            .map(|i| pb::ChildInfo {
                index: i,
                host: format!("web{i:02}"),
                state: if i % 10 == 3 {
                    pb::JobState::Failed as i32
                } else {
                    pb::JobState::Completed as i32
                },
                exit_code: Some(if i % 10 == 3 { 1 } else { 0 }),
                started_at_ms: 1_000,
                ended_at_ms: 2_500,
                ..Default::default()
            })
            .collect();
        let mut m = Model::default();
        m.set_job(pb::JobInfo {
            id: 4,
            name: "patch".into(),
            state: pb::JobState::Failed as i32,
            throttle_limit: 16,
            children,
            ..Default::default()
        });
        m.last_line.insert(1, "hello \u{1b}[2J".into());
        m
    }

    fn screen(m: &mut Model, w: u16, h: u16) -> String {
        let mut terminal = Terminal::new(TestBackend::new(w, h)).unwrap();
        terminal.draw(|f| m.draw(f)).unwrap();
        let buf = terminal.backend().buffer().clone();
        let mut text = String::new();
        for y in 0..h {
            for x in 0..w {
                text.push_str(buf[(x, y)].symbol());
            }
            text.push('\n');
        }
        text
    }

    fn press(m: &mut Model, code: KeyCode) -> Action {
        m.key(KeyEvent::new(code, KeyModifiers::NONE))
    }

    #[test]
    fn header_counts_states_and_rows_show_only_what_fits() {
        let mut m = model(40);
        let s = screen(&mut m, 100, 14);
        assert!(s.contains("Job 4 patch · Failed · 40 hosts · throttle 16"), "{s}");
        assert!(s.contains("Completed 36 · Failed 4"), "{s}");
        assert!(s.contains("web00") && s.contains("1.5s"), "{s}");
        // Output is shown escaped.
        assert!(s.contains("hello \\e[2J"), "{s}");
        // 14 lines: 4 of header, 1 of column names, 9 hosts.
        assert_eq!(m.visible().len(), 9);
        assert!(!s.contains("web09"), "{s}");
    }

    #[test]
    fn filter_failed_only_follow_and_quit() {
        let mut m = model(40);
        screen(&mut m, 100, 14);
        press(&mut m, KeyCode::Char('f'));
        assert_eq!(m.shown().len(), 4);
        press(&mut m, KeyCode::Char('f'));
        press(&mut m, KeyCode::Char('/'));
        for c in "web2".chars() {
            press(&mut m, KeyCode::Char(c));
        }
        press(&mut m, KeyCode::Enter);
        assert_eq!(m.shown().len(), 10);
        let s = screen(&mut m, 100, 14);
        assert!(s.contains("filter: web2"), "{s}");
        press(&mut m, KeyCode::Down);
        assert_eq!(press(&mut m, KeyCode::Enter), Action::Follow(21, "web21".into()));
        m.follow_output(b"one\ntw");
        m.follow_output(b"o\n");
        let s = screen(&mut m, 100, 14);
        assert!(
            s.contains("web21 · following") && s.contains("one") && s.contains("two"),
            "{s}"
        );
        assert_eq!(press(&mut m, KeyCode::Esc), Action::Unfollow);
        assert_eq!(press(&mut m, KeyCode::Char('q')), Action::Quit);
    }

    #[test]
    fn scrolling_keeps_the_selection_on_screen() {
        let mut m = model(100);
        screen(&mut m, 100, 14);
        for _ in 0..20 {
            press(&mut m, KeyCode::Down);
        }
        assert_eq!(m.selected, 20);
        assert_eq!(m.visible().first().map(|v| v.0), Some(12));
        press(&mut m, KeyCode::End);
        assert_eq!(m.visible().last().map(|v| v.0), Some(99));
    }

    #[test]
    fn trouble_listing_the_job_is_shown_instead_of_the_counts() {
        let mut m = model(3);
        m.trouble = Some("no job \"x\"\u{1b}[2J".into());
        let s = screen(&mut m, 100, 10);
        assert!(s.contains("not up to date: no job \"x\"\\e[2J"), "{s}");
    }
}
