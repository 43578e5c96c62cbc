//! The build graph: LLB ops (`pb`), validated `Definition`s and the fluent `State` builder.
pub mod pb;
