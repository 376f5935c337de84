//! Dates as the fs methods send and answer them; the module lives in
//! `agent_proto::calls::time`, beside the params that carry them.

pub(crate) use agent_proto::calls::time::*;
