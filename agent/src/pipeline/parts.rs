//! How a dump is cut into multipart parts: S3 allows at most 10,000 parts of at most 5 GiB, and
//! every part in flight is a buffer in memory. Parts start at `s3.part_size_mib` and double
//! every 1000 parts, as few times as `s3.max_dump_size_gib` needs, so a small dump uses small
//! parts and the largest dump the config allows still fits. Peak memory follows from the plan:
//! [`PartPlan::largest`] bytes per part buffer, `s3.upload_concurrency + 1` of them.

/// S3's limit on the number of parts of one upload.
pub const MAX_PARTS: i32 = 10_000;
/// S3's limit on the size of one part.
pub const MAX_PART_BYTES: u64 = 5 << 30;
/// Parts per size step.
const STEP: i32 = 1000;

/// Part sizes for one upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartPlan {
    base: u64,
    doublings: u32,
}

impl PartPlan {
    /// The plan for parts of `part_size_mib` growing as far as a dump of `max_dump_size_gib`
    /// (compressed) needs; `Err` says why no plan fits S3's limits.
    pub fn new(part_size_mib: u32, max_dump_size_gib: u32) -> Result<PartPlan, String> {
        let base = u64::from(part_size_mib) << 20;
        let needed = u64::from(max_dump_size_gib) << 30;
        let mut plan = PartPlan { base, doublings: 0 };
        while plan.capacity() < needed {
            plan.doublings += 1;
            if plan.largest() > MAX_PART_BYTES {
                return Err(format!(
                    "a dump of {max_dump_size_gib} GiB does not fit S3's 10,000 parts of at \
                     most 5 GiB starting from {part_size_mib} MiB parts; raise s3.part_size_mib \
                     or lower s3.max_dump_size_gib (at most {} GiB with these parts)",
                    PartPlan {
                        base,
                        doublings: plan.doublings - 1
                    }
                    .capacity()
                        >> 30
                ));
            }
        }
        Ok(plan)
    }

    /// Parts of `base` bytes, doubling `doublings` times (unit tests use tiny parts).
    #[cfg(test)]
    pub fn of_bytes(base: u64, doublings: u32) -> PartPlan {
        PartPlan { base, doublings }
    }

    /// The size of part `number` (1-based).
    pub fn size(&self, number: i32) -> usize {
        let step = ((number.max(1) - 1) / STEP) as u32;
        (self.base << step.min(self.doublings)) as usize
    }

    /// The largest part this plan uses.
    pub fn largest(&self) -> u64 {
        self.base << self.doublings
    }

    /// The largest dump that fits in [`MAX_PARTS`] parts.
    pub fn capacity(&self) -> u64 {
        (1..=MAX_PARTS)
            .step_by(STEP as usize)
            .map(|first| self.size(first) as u64 * STEP as u64)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;

    #[test]
    fn small_dumps_keep_small_parts_and_the_largest_allowed_fits() {
        let plan = PartPlan::new(8, 1024).unwrap();
        assert_eq!(plan.size(1) as u64, 8 * MIB);
        assert_eq!(plan.size(1000) as u64, 8 * MIB);
        assert_eq!(plan.size(1001) as u64, 16 * MIB);
        assert!(plan.capacity() >= 1024 * GIB);
        assert_eq!(plan.largest(), 256 * MIB);
        // Sizes never shrink and never pass the largest.
        let sizes: Vec<usize> = (1..=MAX_PARTS).map(|n| plan.size(n)).collect();
        assert!(sizes.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(*sizes.last().unwrap() as u64, plan.largest());
    }

    #[test]
    fn a_five_terabyte_dump_is_planned_within_s3s_limits() {
        let five_tb_in_gib = (5_000_000_000_000u64).div_ceil(GIB) as u32;
        let plan = PartPlan::new(8, five_tb_in_gib).unwrap();
        assert!(plan.capacity() >= 5_000_000_000_000);
        assert!(plan.largest() <= MAX_PART_BYTES);
        let total: u64 = (1..=MAX_PARTS).map(|n| plan.size(n) as u64).sum();
        assert_eq!(total, plan.capacity());
        // Memory for the default two uploads in flight and one filling: 3 x the largest part.
        assert_eq!(plan.largest(), 2 * GIB);
    }

    #[test]
    fn an_impossible_size_is_refused_with_the_limit() {
        let e = PartPlan::new(5, 60_000).unwrap_err();
        assert!(e.contains("raise s3.part_size_mib"), "{e}");
        assert!(PartPlan::new(1024, 30_000).is_ok());
    }
}
