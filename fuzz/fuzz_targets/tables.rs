//! Field tables: Warren's iterative nesting scan (`protocol::nesting::check_table`) decides
//! what reaches amq-protocol's recursive parser, so the two must agree on every input the
//! scan lets through: a table it calls malformed does not parse (else a valid client message
//! would be refused), and a table both accept takes exactly the bytes the scan measured. A parsed table then survives
//! encoding and parsing again, and the JSON conversions the management API uses.
#![no_main]

use amq_protocol::frame::WriteContext;
use amq_protocol::types::generation::gen_field_table;
use amq_protocol::types::parsing::parse_field_table;
use amq_protocol::types::FieldTable;
use libfuzzer_sys::fuzz_target;
use warren_broker::protocol::json::{json_table, table_json};
use warren_broker::protocol::nesting::{check_table, NestingError};

fn encode(table: &FieldTable) -> Vec<u8> {
    gen_field_table(table)(WriteContext::from(Vec::new()))
        .expect("a parsed table encodes")
        .write
}

fuzz_target!(|data: &[u8]| {
    match check_table(data) {
        // Never handed to amq-protocol: its recursion is what the scan guards against.
        Err(NestingError::TooDeep) => {}
        Err(NestingError::Malformed) => {
            if let Ok((rest, table)) = parse_field_table(data) {
                panic!(
                    "the scan refused a table amq-protocol parses ({} bytes left): {table:?}",
                    rest.len()
                );
            }
        }
        Ok(len) => {
            // The scan checks structure only (not, say, that keys are UTF-8): what it lets
            // through, amq-protocol may still refuse, and the frame is refused then.
            let Ok((rest, table)) = parse_field_table(data) else {
                return;
            };
            assert_eq!(
                data.len() - rest.len(),
                len,
                "the scan measured another length"
            );
            let once = encode(&table);
            let (_, again) = parse_field_table(&once[..]).expect("an encoded table parses");
            assert_eq!(encode(&again), once, "encoding is not stable");
            // The management API's conversions: any table has a JSON form, and a table
            // made from JSON encodes.
            if let Some(t) = json_table(&table_json(&table)) {
                encode(&t);
            }
        }
    }
});
