//! [`LeaklessCodec`]: leakless's operators to bytes and back.
//!
//! Each operator of ours is written as a tag and the operator's own bytes
//! (`to_bytes` in the library; its inputs travel beside it as Ballista's
//! protobuf children); anything else goes to Ballista's codec. No operator
//! carries state across: a decoded plan reads its inputs itself.

use std::sync::Arc;

use ballista_core::serde::BallistaPhysicalExtensionCodec;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::physical_plan::ExecutionPlan;
use datafusion_proto::physical_plan::{PhysicalExtensionCodec, PhysicalProtoConverterExtension};
use leakless::ingest::scan::ScanExec;
use leakless::order::BucketSortExec;
use leakless::split::hot::HotKeysExec;
use leakless::split::route::RouteExec;
use leakless::temporal::PointInTimeExec;
use leakless::write::exec::WriteExec;

/// The prefix of every operator of ours on the wire.
const MAGIC: &[u8] = b"leakless/1 ";

/// The operators of ours, by tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Scan,
    BucketSort,
    PointInTime,
    Write,
    Route,
    HotKeys,
}

impl Kind {
    const ALL: [Kind; 6] = [
        Kind::Scan,
        Kind::BucketSort,
        Kind::PointInTime,
        Kind::Write,
        Kind::Route,
        Kind::HotKeys,
    ];

    fn tag(self) -> u8 {
        match self {
            Kind::Scan => b's',
            Kind::BucketSort => b'b',
            Kind::PointInTime => b'p',
            Kind::Write => b'w',
            Kind::Route => b'r',
            Kind::HotKeys => b'h',
        }
    }

    /// How many inputs the operator takes (`None`: any).
    fn inputs(self) -> Option<usize> {
        match self {
            Kind::Scan => Some(0),
            Kind::BucketSort | Kind::Route | Kind::HotKeys => Some(1),
            Kind::Write => Some(2),
            Kind::PointInTime => None,
        }
    }
}

/// leakless's operators, then Ballista's: install the same codec in the
/// client, the scheduler and every executor.
#[derive(Debug, Default)]
pub struct LeaklessCodec {
    ballista: BallistaPhysicalExtensionCodec,
}

impl LeaklessCodec {
    /// The codec, to install in a session, scheduler or executor config.
    pub fn shared() -> Arc<dyn PhysicalExtensionCodec> {
        Arc::new(LeaklessCodec::default())
    }

    /// Our bytes for `node`, when it is one of ours.
    fn encode_ours(node: &Arc<dyn ExecutionPlan>) -> Option<(Kind, Result<Vec<u8>>)> {
        if let Some(scan) = node.downcast_ref::<ScanExec>() {
            Some((Kind::Scan, scan.to_bytes()))
        } else if let Some(sort) = node.downcast_ref::<BucketSortExec>() {
            Some((Kind::BucketSort, sort.to_bytes()))
        } else if let Some(pit) = node.downcast_ref::<PointInTimeExec>() {
            Some((Kind::PointInTime, pit.to_bytes()))
        } else if let Some(route) = node.downcast_ref::<RouteExec>() {
            Some((Kind::Route, route.to_bytes()))
        } else if let Some(hot) = node.downcast_ref::<HotKeysExec>() {
            Some((Kind::HotKeys, hot.to_bytes()))
        } else {
            node.downcast_ref::<WriteExec>()
                .map(|write| (Kind::Write, write.to_bytes()))
        }
    }

    fn decode_ours(
        kind: Kind,
        bytes: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if kind.inputs().is_some_and(|n| n != inputs.len()) {
            return Err(DataFusionError::Internal(format!(
                "leakless codec: {kind:?} with {} inputs",
                inputs.len()
            )));
        }
        Ok(match kind {
            Kind::Scan => Arc::new(ScanExec::from_bytes(bytes)?),
            Kind::BucketSort => Arc::new(BucketSortExec::from_bytes(bytes, inputs[0].clone())?),
            Kind::Route => Arc::new(RouteExec::from_bytes(bytes, inputs[0].clone())?),
            Kind::HotKeys => Arc::new(HotKeysExec::from_bytes(bytes, inputs[0].clone())?),
            Kind::PointInTime => Arc::new(PointInTimeExec::from_bytes(bytes, inputs.to_vec())?),
            Kind::Write => Arc::new(WriteExec::from_bytes(
                bytes,
                inputs[0].clone(),
                inputs[1].clone(),
            )?),
        })
    }
}

impl PhysicalExtensionCodec for LeaklessCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        ctx: &TaskContext,
        proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let Some(rest) = buf.strip_prefix(MAGIC) else {
            return self.ballista.try_decode(buf, inputs, ctx, proto_converter);
        };
        let (&tag, bytes) = rest
            .split_first()
            .ok_or_else(|| DataFusionError::Internal("leakless codec: no tag".into()))?;
        let kind = Kind::ALL
            .into_iter()
            .find(|k| k.tag() == tag)
            .ok_or_else(|| DataFusionError::Internal(format!("leakless codec: tag {tag}")))?;
        LeaklessCodec::decode_ours(kind, bytes, inputs)
    }

    fn try_encode(
        &self,
        node: Arc<dyn ExecutionPlan>,
        buf: &mut Vec<u8>,
        proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<()> {
        match LeaklessCodec::encode_ours(&node) {
            Some((kind, bytes)) => {
                let bytes = bytes?;
                buf.extend_from_slice(MAGIC);
                buf.push(kind.tag());
                buf.extend_from_slice(&bytes);
                Ok(())
            }
            None => self.ballista.try_encode(node, buf, proto_converter),
        }
    }
}
