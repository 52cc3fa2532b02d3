//! Every import passes through `answer`: asked of the host live, asked and
//! kept (`check --record`), or answered from a recording (`plugins replay`),
//! where a call the recording does not hold ends the plugin's call.

use super::CapabilityContext;

/// One host call as `doctor check --record` stores it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct RecordedCall {
    pub call: String,
    pub args: serde_json::Value,
    pub answer: serde_json::Value,
}

#[derive(Debug, Default)]
pub enum Tape {
    /// Ask the host.
    #[default]
    Live,
    /// Ask the host and keep every question and answer, up to
    /// `MAX_RECORDED_BYTES` (then `truncated`, and no more are kept).
    Record {
        calls: Vec<RecordedCall>,
        bytes: usize,
        truncated: bool,
    },
    /// Answer from a recording; a call it does not hold ends the plugin's call.
    Replay {
        calls: Vec<RecordedCall>,
        used: Vec<bool>,
    },
}

/// What one plugin's recording may hold in memory and on disk.
pub const MAX_RECORDED_BYTES: usize = 64 << 20;

impl Tape {
    pub fn record() -> Tape {
        Tape::Record {
            calls: Vec::new(),
            bytes: 0,
            truncated: false,
        }
    }

    pub fn replay(calls: Vec<RecordedCall>) -> Tape {
        let used = vec![false; calls.len()];
        Tape::Replay { calls, used }
    }
}

impl CapabilityContext {
    /// Answer one host call: live (and kept, when recording), or from the
    /// recording when replaying. The first unused recorded call with the
    /// same name and arguments answers; none is a trap that names the call.
    pub(crate) fn answer<R>(
        &mut self,
        call: &str,
        args: impl serde::Serialize,
        live: impl FnOnce(&mut Self) -> R,
    ) -> wasmtime::Result<R>
    where
        R: serde::Serialize + serde::de::DeserializeOwned,
    {
        if matches!(self.tape, Tape::Live) {
            return Ok(live(self));
        }
        let args = serde_json::to_value(args).map_err(wasmtime::Error::msg)?;
        if let Tape::Replay { calls, used } = &mut self.tape {
            let found = calls
                .iter()
                .enumerate()
                .position(|(i, c)| !used[i] && c.call == call && c.args == args);
            let Some(i) = found else {
                return Err(wasmtime::Error::msg(format!(
                    "replay: the plugin called {call}({args}), which the recording does not hold"
                )));
            };
            used[i] = true;
            return serde_json::from_value(calls[i].answer.clone()).map_err(|e| {
                wasmtime::Error::msg(format!(
                    "replay: the recorded answer to {call} does not fit: {e}"
                ))
            });
        }
        let answer = live(self);
        if let Tape::Record {
            calls,
            bytes,
            truncated,
        } = &mut self.tape
        {
            if !*truncated {
                let value = serde_json::to_value(&answer).map_err(wasmtime::Error::msg)?;
                let size = call.len() + args.to_string().len() + value.to_string().len();
                if *bytes + size > MAX_RECORDED_BYTES {
                    *truncated = true;
                } else {
                    *bytes += size;
                    calls.push(RecordedCall {
                        call: call.to_string(),
                        args,
                        answer: value,
                    });
                }
            }
        }
        Ok(answer)
    }
}

#[cfg(test)]
mod tests {
    use super::{RecordedCall, Tape};
    use crate::capabilities::test_context;
    use crate::policy::Grants;

    #[test]
    fn a_recording_answers_what_it_holds_once_and_nothing_else() {
        let mut recording = test_context(Grants::default());
        recording.tape = Tape::record();
        let live: u32 = recording.answer("host.answer", (1,), |_| 42).unwrap();
        let Tape::Record { calls, .. } = std::mem::take(&mut recording.tape) else {
            panic!("still recording")
        };
        assert_eq!(live, 42);

        let mut replay = test_context(Grants::default());
        replay.tape = Tape::replay(calls);
        let replayed: u32 = replay
            .answer("host.answer", (1,), |_| panic!("never asked live"))
            .unwrap();
        assert_eq!(replayed, 42);
        let again = replay.answer::<u32>("host.answer", (1,), |_| panic!("never asked live"));
        assert!(
            again.unwrap_err().to_string().contains("host.answer([1])"),
            "a second identical call is not held"
        );
        let other = Tape::replay(vec![RecordedCall {
            call: "host.answer".into(),
            args: serde_json::json!([2]),
            answer: serde_json::json!(7),
        }]);
        replay.tape = other;
        assert!(
            replay.answer::<u32>("host.answer", (1,), |_| 0).is_err(),
            "other arguments are another call"
        );
    }
}
