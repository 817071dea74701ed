// Package scoring computes the anomaly-detection scores of two public benchmarks exactly as their
// authors do, so that a model's numbers can be set beside the published baselines.
//
// # Overview
//
// [SKAB] implements the Skoltech Anomaly Benchmark protocol (upstream core/metrics.py): pointwise
// F1, false and missed alarm rates pooled over files, and the SKAB changepoint score, a NAB-like
// score with 60 s windows to the right of each true changepoint and a tanh scoring curve, in the
// Standard, LowFP and LowFN profiles.
//
// [NAB] and [NABSweep] implement the Numenta Anomaly Benchmark scorer (upstream nab/sweeper.py):
// the probationary period, the scaled-sigmoid weights inside and after windows, per-file raw
// scores, the normalisation against the null and perfect detectors, and the threshold sweep that
// picks one threshold per detector and profile across files.
//
// [ReadSKAB], [ReadNAB], [ReadNABWindows] and [ReadNABProfiles] read the datasets' files.
//
// Both scorers are checked against published outputs: the tests recompute every column of SKAB's
// baselines/metrics_dev23.csv from the published per-row predictions, and NAB's published
// per-file scores, row counts and per-row S(t) columns from the published per-row outputs of
// Numenta HTM and Windowed Gaussian. The datasets folder is ../../../shared/datasets or
// $PERCH_DATASETS; those tests skip when it is absent.
//
// # Upstream behaviour kept on purpose
//
//   - SKAB: overlapping changepoint windows are cut from the later window's left edge, and a
//     predicted changepoint on the shared edge counts in both windows.
//   - SKAB: rows where a detector emitted nothing ([SKABFile].NoOutput) leave the outlier counts
//     and the predicted changepoint series, but their true changepoints keep their windows.
//   - SKAB: with [SKABOptions].RollingMax (the Isolation forest notebook's rolling(30).max()),
//     the first RollingMax-1 rows, which pandas leaves without a value, count as 0.
//   - NAB: a repeated timestamp (daylight saving time in some AWS files) stands for its first
//     row; Total is every row of a file while TP/TN/FP/FN skip the probationary rows.
//   - NAB: after a one-row window NAB divides by zero; here such rows weigh -FP.
//
// # Usage
//
//	tab, err := scoring.ReadSKAB("skab/data/valve1/0.csv")
//	// ... run a detector on rows 400.. of tab, giving pred []bool ...
//	res, err := scoring.SKAB([]scoring.SKABFile{{Name: "valve1/0.csv",
//		Times: tab.Times[400:], Anomaly: tab.Anomaly[400:], Changepoint: tab.Changepoint[400:],
//		Predicted: pred}}, scoring.SKABOptions{})
//	fmt.Println(res.F1, res.FAR, res.MAR, res.NABStandard)
//
//	best, sweep, err := scoring.NABSweep(files, scoring.NABStandard) // choose a threshold
//	res, err := scoring.NAB(files, scoring.NABStandard, best.Threshold)
//
// All functions are pure: they keep no state and are safe for concurrent use.
package scoring
