//! The params reader, shared with every typed call in `agent_proto::calls`
//! (missing or mistyped params are zod-shaped validation errors, `options`
//! flattened, `null` as absent).

pub(crate) use agent_proto::calls::{kind, Params};
