pub use warren_broker::*;
