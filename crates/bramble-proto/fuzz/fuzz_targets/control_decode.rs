//! Control::from_payload and ErrorReport::from_payload on arbitrary bytes:
//! Ok or a typed error, never a panic. What decodes re-encodes to JSON that
//! decodes to the same value (when it still fits the limit), and decoding
//! through a control packet gives the same answer.
#![no_main]

use bramble_proto::control::{Control, ControlError, ErrorReport, MAX_CONTROL_LEN};
use bramble_proto::frame::{Frame, MAX_PAYLOAD};
use bramble_proto::{ContentType, Pin, RefId};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let control = Control::from_payload(data);
    if data.len() > MAX_CONTROL_LEN {
        assert_eq!(control, Err(ControlError::TooLarge(data.len())));
    }
    if let Ok(c) = &control {
        let json = c.to_payload();
        let value: serde_json::Value = serde_json::from_slice(&json).expect("valid JSON");
        assert!(
            value.get("type").and_then(|t| t.as_str()).is_some(),
            "untagged: {value}"
        );
        if json.len() <= MAX_CONTROL_LEN {
            assert_eq!(Control::from_payload(&json).as_ref(), Ok(c));
        } else {
            assert!(matches!(
                Control::from_payload(&json),
                Err(ControlError::TooLarge(_))
            ));
        }
    }
    if data.len() <= MAX_PAYLOAD {
        let frame = Frame::single(ContentType::Control, Pin(1), RefId(2), data.to_vec());
        let bytes = frame.encode().expect("fits one packet");
        let (decoded, _) = Frame::decode(&bytes).expect("decodes");
        assert_eq!(Control::from_frame(&decoded), control);
        let wrong = Frame::single(ContentType::Error, Pin(1), RefId(2), data.to_vec());
        assert_eq!(
            Control::from_frame(&wrong),
            Err(ControlError::WrongType(ContentType::Error))
        );
    }

    let report = ErrorReport::from_payload(data);
    if data.len() > MAX_CONTROL_LEN {
        assert_eq!(report, Err(ControlError::TooLarge(data.len())));
    }
    if let Ok(r) = &report {
        let frame = r.frame(Pin(1), RefId(2));
        assert_eq!(frame.content_type, ContentType::Error);
        if frame.payload.len() <= MAX_CONTROL_LEN {
            assert_eq!(ErrorReport::from_payload(&frame.payload).as_ref(), Ok(r));
        }
    }
});
