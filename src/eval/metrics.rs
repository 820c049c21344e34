//! Metric computations, unit-tested against hand-computed cases.
//!
//! Classification: accuracy, confusion matrix, per-class precision/recall.
//! Detection (COCO conventions): per image and class, predictions are matched greedily in descending score
//! order to the unmatched ground-truth box of the same class with the highest IoU at or above the threshold;
//! AP is the 101-point interpolated area under the precision envelope; mAP@0.5 and mAP@[.5:.95] (thresholds
//! 0.50, 0.55, …, 0.95) average over the classes that have ground truth.

use crate::data::project::BBox;
use crate::model::predictor::Detection;

/// The ten IoU thresholds of COCO's mAP@[.5:.95]. Computed as k/100 so that 0.75 is exactly 0.75.
pub fn coco_iou_thresholds() -> [f32; 10] {
    std::array::from_fn(|i| (50 + 5 * i) as f32 / 100.0)
}

// -------------------------------------------------------------------------------------------------
// Classification

/// `confusion[truth][predicted]` counts. Pairs with a class outside `0..num_classes` are ignored.
pub fn confusion_matrix(pairs: &[(usize, usize)], num_classes: usize) -> Vec<Vec<usize>> {
    let mut m = vec![vec![0; num_classes]; num_classes];
    for &(t, p) in pairs {
        if t < num_classes && p < num_classes {
            m[t][p] += 1;
        }
    }
    m
}

/// Fraction of the confusion matrix on its diagonal (0 for an empty matrix).
pub fn accuracy(confusion: &[Vec<usize>]) -> f32 {
    let total: usize = confusion.iter().flatten().sum();
    let correct: usize = (0..confusion.len()).map(|i| confusion[i][i]).sum();
    ratio(correct, total)
}

/// Per class: (precision, recall, support). A class never predicted has precision 0; a class without
/// examples has recall 0 (as scikit-learn's `zero_division=0`).
pub fn per_class_precision_recall(confusion: &[Vec<usize>]) -> Vec<(f32, f32, usize)> {
    let n = confusion.len();
    (0..n)
        .map(|c| {
            let tp = confusion[c][c];
            let support: usize = confusion[c].iter().sum();
            let predicted: usize = (0..n).map(|t| confusion[t][c]).sum();
            (ratio(tp, predicted), ratio(tp, support), support)
        })
        .collect()
}

fn ratio(a: usize, b: usize) -> f32 {
    if b == 0 {
        0.0
    } else {
        a as f32 / b as f32
    }
}

// -------------------------------------------------------------------------------------------------
// Detection

/// Intersection over union of two boxes (0 when either has no area).
pub fn iou(a: &BBox, b: &BBox) -> f32 {
    let w = (a.xmax.min(b.xmax) - a.xmin.max(b.xmin)).max(0.0);
    let h = (a.ymax.min(b.ymax) - a.ymin.max(b.ymin)).max(0.0);
    let inter = w * h;
    let union = a.area() + b.area() - inter;
    if union <= 0.0 {
        0.0
    } else {
        inter / union
    }
}

/// Greedy COCO matching within one image: for each prediction (in descending score order, ties in input
/// order) the unmatched truth box of the same class with the highest IoU >= `iou_threshold`.
/// Returns, per prediction (in input order), the index of its matched truth box.
pub fn match_detections(truth: &[BBox], predictions: &[Detection], iou_threshold: f32) -> Vec<Option<usize>> {
    let mut order: Vec<usize> = (0..predictions.len()).collect();
    order.sort_by(|&a, &b| predictions[b].score.total_cmp(&predictions[a].score));
    let mut taken = vec![false; truth.len()];
    let mut matched = vec![None; predictions.len()];
    for p in order {
        let pred = &predictions[p].bbox;
        let mut best: Option<(usize, f32)> = None;
        for (t, gt) in truth.iter().enumerate() {
            if taken[t] || gt.class != pred.class {
                continue;
            }
            let v = iou(gt, pred);
            if v >= iou_threshold && best.is_none_or(|(_, b)| v > b) {
                best = Some((t, v));
            }
        }
        if let Some((t, _)) = best {
            taken[t] = true;
            matched[p] = Some(t);
        }
    }
    matched
}

/// COCO's 101-point interpolated average precision of one class.
/// `scored`: every prediction of the class over the whole set as (score, is true positive);
/// `num_truth`: its ground-truth boxes. `None` when the class has no ground truth (it does not count in mAP).
pub fn average_precision(scored: &[(f32, bool)], num_truth: usize) -> Option<f32> {
    let curve = precision_envelope(scored, num_truth)?;
    Some(interpolated_101(&curve).iter().map(|&(_, p)| p as f64).sum::<f64>() as f32 / 101.0)
}

/// The 101 (recall threshold, interpolated precision) points behind [`average_precision`], for plotting the
/// precision–recall curve. `None` when the class has no ground truth.
pub fn pr_curve_101(scored: &[(f32, bool)], num_truth: usize) -> Option<Vec<(f32, f32)>> {
    precision_envelope(scored, num_truth).map(|c| interpolated_101(&c))
}

/// (recall, precision) after each prediction in descending score order, with precision replaced by its
/// running maximum from the right (the envelope).
fn precision_envelope(scored: &[(f32, bool)], num_truth: usize) -> Option<Vec<(f64, f64)>> {
    if num_truth == 0 {
        return None;
    }
    let mut sorted = scored.to_vec();
    // Stable: ties keep their input order, as COCO's mergesort does.
    sorted.sort_by(|a, b| b.0.total_cmp(&a.0));
    let (mut tp, mut fp) = (0usize, 0usize);
    let mut curve: Vec<(f64, f64)> = sorted
        .iter()
        .map(|&(_, hit)| {
            if hit {
                tp += 1;
            } else {
                fp += 1;
            }
            (tp as f64 / num_truth as f64, tp as f64 / (tp + fp) as f64)
        })
        .collect();
    for i in (0..curve.len().saturating_sub(1)).rev() {
        curve[i].1 = curve[i].1.max(curve[i + 1].1);
    }
    Some(curve)
}

fn interpolated_101(curve: &[(f64, f64)]) -> Vec<(f32, f32)> {
    (0..=100)
        .map(|i| {
            let r = i as f64 / 100.0;
            // First point reaching recall r (recall is non-decreasing along the curve).
            let k = curve.partition_point(|&(rec, _)| rec < r);
            (r as f32, curve.get(k).map_or(0.0, |&(_, p)| p as f32))
        })
        .collect()
}

/// Ground truth and predictions of one image (all in the same pixel coordinates).
#[derive(Debug, Clone, Default)]
pub struct ImageDetections {
    pub truth: Vec<BBox>,
    pub predictions: Vec<Detection>,
}

/// Everything the detection report needs, indexed by class.
#[derive(Debug, Clone, PartialEq)]
pub struct DetectionMetrics {
    /// Ground-truth boxes per class.
    pub support: Vec<usize>,
    /// AP at IoU 0.5 and averaged over 0.5..0.95; `None` for classes without ground truth.
    pub ap50: Vec<Option<f32>>,
    pub ap50_95: Vec<Option<f32>>,
    pub map50: f32,
    pub map50_95: f32,
    /// At IoU 0.5 and the score threshold: per class and over all classes.
    pub precision: Vec<f32>,
    pub recall: Vec<f32>,
    pub precision_all: f32,
    pub recall_all: f32,
    /// Per class, IoU 0.5: the 101 interpolated (recall, precision) points (empty without ground truth).
    pub pr_curves: Vec<Vec<(f32, f32)>>,
    /// Per image: false positives + missed boxes at IoU 0.5 and the score threshold.
    pub image_errors: Vec<usize>,
}

/// Detection metrics over a set of images. Predictions of classes `>= num_classes` are ignored.
pub fn detection_metrics(images: &[ImageDetections], num_classes: usize, score_threshold: f32) -> DetectionMetrics {
    let thresholds = coco_iou_thresholds();
    let mut support = vec![0usize; num_classes];
    for im in images {
        for t in &im.truth {
            if t.class < num_classes {
                support[t.class] += 1;
            }
        }
    }
    // scored[threshold][class] = (score, is true positive) of every prediction.
    let mut scored: Vec<Vec<Vec<(f32, bool)>>> = vec![vec![Vec::new(); num_classes]; thresholds.len()];
    let (mut tp_at, mut fp_at) = (vec![0usize; num_classes], vec![0usize; num_classes]);
    let mut image_errors = Vec::with_capacity(images.len());
    for im in images {
        let preds: Vec<Detection> = im.predictions.iter().filter(|d| d.bbox.class < num_classes).cloned().collect();
        let truth: Vec<BBox> = im.truth.iter().filter(|t| t.class < num_classes).copied().collect();
        let mut errors = 0;
        for (ti, &thr) in thresholds.iter().enumerate() {
            let matched = match_detections(&truth, &preds, thr);
            for (d, m) in preds.iter().zip(&matched) {
                scored[ti][d.bbox.class].push((d.score, m.is_some()));
            }
            if ti == 0 {
                // Greedy matching in score order means the matches of the predictions above the threshold do
                // not depend on those below it, so one matching serves every score threshold.
                let mut found = 0;
                for (d, m) in preds.iter().zip(&matched) {
                    if d.score >= score_threshold {
                        if m.is_some() {
                            tp_at[d.bbox.class] += 1;
                            found += 1;
                        } else {
                            fp_at[d.bbox.class] += 1;
                            errors += 1;
                        }
                    }
                }
                errors += truth.len() - found;
            }
        }
        image_errors.push(errors);
    }

    let ap50: Vec<Option<f32>> = (0..num_classes).map(|c| average_precision(&scored[0][c], support[c])).collect();
    let ap50_95: Vec<Option<f32>> = (0..num_classes)
        .map(|c| {
            let aps: Option<Vec<f32>> = (0..thresholds.len()).map(|t| average_precision(&scored[t][c], support[c])).collect();
            aps.map(|v| v.iter().sum::<f32>() / v.len() as f32)
        })
        .collect();
    let mean = |v: &[Option<f32>]| {
        let present: Vec<f32> = v.iter().flatten().copied().collect();
        if present.is_empty() {
            0.0
        } else {
            present.iter().sum::<f32>() / present.len() as f32
        }
    };
    let pr_curves = (0..num_classes).map(|c| pr_curve_101(&scored[0][c], support[c]).unwrap_or_default()).collect();
    let (tp, fp, total): (usize, usize, usize) = (tp_at.iter().sum(), fp_at.iter().sum(), support.iter().sum());
    DetectionMetrics {
        map50: mean(&ap50),
        map50_95: mean(&ap50_95),
        precision: (0..num_classes).map(|c| ratio(tp_at[c], tp_at[c] + fp_at[c])).collect(),
        recall: (0..num_classes).map(|c| ratio(tp_at[c], support[c])).collect(),
        precision_all: ratio(tp, tp + fp),
        recall_all: ratio(tp, total),
        support,
        ap50,
        ap50_95,
        pr_curves,
        image_errors,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(xmin: f32, ymin: f32, xmax: f32, ymax: f32, class: usize) -> BBox {
        BBox { xmin, ymin, xmax, ymax, class }
    }
    fn d(bbox: BBox, score: f32) -> Detection {
        Detection { bbox, score }
    }
    fn close(a: f32, e: f32) -> bool {
        (a - e).abs() < 1e-5
    }

    #[test]
    fn classification_by_hand() {
        // truth/pred pairs: class 0 -> 0, 0, 1; class 1 -> 1, 1, 1.
        // confusion = [[2, 1], [0, 3]]; accuracy = 5/6.
        // class 0: predicted twice, both right -> precision 2/2 = 1; recall 2/3.
        // class 1: predicted 4 times, 3 right -> precision 3/4; recall 3/3 = 1.
        let pairs = [(0, 0), (0, 0), (0, 1), (1, 1), (1, 1), (1, 1)];
        let m = confusion_matrix(&pairs, 3);
        assert_eq!(m, vec![vec![2, 1, 0], vec![0, 3, 0], vec![0, 0, 0]]);
        assert!(close(accuracy(&m), 5.0 / 6.0));
        let pr = per_class_precision_recall(&m);
        assert!(close(pr[0].0, 1.0) && close(pr[0].1, 2.0 / 3.0) && pr[0].2 == 3);
        assert!(close(pr[1].0, 0.75) && close(pr[1].1, 1.0) && pr[1].2 == 3);
        // Class 2: never true, never predicted -> 0, 0 (no division by zero).
        assert_eq!(pr[2], (0.0, 0.0, 0));
        assert_eq!(accuracy(&confusion_matrix(&[], 2)), 0.0);
    }

    #[test]
    fn iou_by_hand() {
        // [0,10]x[0,10] and [5,15]x[5,15]: intersection 5*5 = 25, union 100 + 100 - 25 = 175.
        assert!(close(iou(&b(0., 0., 10., 10., 0), &b(5., 5., 15., 15., 0)), 25.0 / 175.0));
        assert_eq!(iou(&b(0., 0., 10., 10., 0), &b(10., 0., 20., 10., 0)), 0.0);
        assert_eq!(iou(&b(0., 0., 0., 10., 0), &b(0., 0., 0., 10., 0)), 0.0);
        assert!(close(iou(&b(1., 2., 3., 4., 0), &b(1., 2., 3., 4., 0)), 1.0));
    }

    #[test]
    fn greedy_matching_by_hand() {
        let truth = [b(0., 0., 10., 10., 0), b(8., 0., 18., 10., 0), b(0., 0., 10., 10., 1)];
        // p0 (score .9) overlaps t0 with IoU 1 and t1 with IoU 2/18 -> t0.
        // p1 (score .8) is a duplicate of t0 -> t0 is taken, t1 has IoU < .5 -> unmatched (false positive).
        // p2 (score .7) covers t1 exactly but has class 1 -> not t1; t2 (class 1) has IoU 2/18 -> unmatched.
        // p3 (score .95) with class 1 on t2 -> t2, processed first although it comes last.
        let preds = [
            d(b(0., 0., 10., 10., 0), 0.9),
            d(b(0., 0., 10., 10., 0), 0.8),
            d(b(8., 0., 18., 10., 1), 0.7),
            d(b(0., 0., 10., 10., 1), 0.95),
        ];
        assert_eq!(match_detections(&truth, &preds, 0.5), vec![Some(0), None, None, Some(2)]);
        // A prediction between two truths takes the higher IoU: [6,16]x[0,10] against t0 [0,10]: intersection
        // 40, union 160 -> 0.25; against t1 [8,18]: intersection 80, union 120 -> 0.67 -> t1.
        assert_eq!(match_detections(&truth, &[d(b(6., 0., 16., 10., 0), 0.5)], 0.2), vec![Some(1)]);
    }

    #[test]
    fn average_precision_by_hand() {
        // 3 truth boxes; predictions by score: TP, FP, TP, FP (one truth never found).
        // cumulative recall    1/3, 1/3, 2/3, 2/3
        // cumulative precision 1,   1/2, 2/3, 1/2
        // envelope (max to the right): 1, 2/3, 2/3, 1/2
        // recall thresholds 0.00..=0.33 (34 points) -> first point with recall >= r is #0 -> precision 1
        //                   0.34..=0.66 (33 points) -> point #2 -> 2/3
        //                   0.67..=1.00 (34 points) -> none -> 0
        // AP = (34 * 1 + 33 * 2/3) / 101 = 56 / 101.
        let scored = [(0.9, true), (0.8, false), (0.7, true), (0.6, false)];
        assert!(close(average_precision(&scored, 3).unwrap(), 56.0 / 101.0));
        // Input order does not matter (sorted by score inside).
        let shuffled = [(0.6, false), (0.7, true), (0.9, true), (0.8, false)];
        assert!(close(average_precision(&shuffled, 3).unwrap(), 56.0 / 101.0));
        // All found, nothing wrong: 1. Nothing predicted: 0. No truth: not counted.
        assert!(close(average_precision(&[(0.5, true), (0.4, true)], 2).unwrap(), 1.0));
        assert_eq!(average_precision(&[], 2), Some(0.0));
        assert_eq!(average_precision(&[(0.5, false)], 0), None);
        // A false positive ranked first: precision 1/2 at recall 1 -> envelope 1/2 everywhere -> AP 1/2.
        assert!(close(average_precision(&[(0.9, false), (0.8, true)], 1).unwrap(), 0.5));
        let curve = pr_curve_101(&scored, 3).unwrap();
        assert_eq!(curve.len(), 101);
        assert!(close(curve[33].1, 1.0) && close(curve[34].1, 2.0 / 3.0) && close(curve[67].1, 0.0));
    }

    #[test]
    fn detection_metrics_by_hand() {
        // Image A: truth circle t0 (class 0) and square t1 (class 1).
        //   predictions: class 0 on t0 exactly (0.9); class 1 with IoU 0.75 on t1 (0.8); a class-0 box on
        //   nothing (0.4).
        // Image B: truth class 0 box, predicted nothing -> a miss.
        // IoU 0.5: class 0 scored = [(0.9, TP), (0.4, FP)], 2 truths -> recall 1/2 reached at precision 1
        //   -> thresholds 0..=0.5 (51 points) precision 1, rest 0 -> AP 51/101.
        //   class 1 scored = [(0.8, TP)], 1 truth -> AP 1. mAP@0.5 = (51/101 + 1) / 2.
        // IoU 0.5..0.95: class 0: t0 matched exactly at every threshold -> 51/101 at all 10.
        //   class 1: IoU exactly 0.75 -> TP for 0.50, 0.55, 0.60, 0.65, 0.70, 0.75 (AP 1), FP above (AP 0)
        //   -> 6/10. mAP@[.5:.95] = (51/101 + 0.6) / 2.
        // At score threshold 0.5: TP = 2 (0.9 and 0.8), FP = 0 (0.4 is below) -> precision 1; recall 2/3.
        //   per image errors: A = 0, B = 1 miss.
        let a = ImageDetections {
            truth: vec![b(0., 0., 10., 10., 0), b(20., 0., 120., 100., 1)],
            predictions: vec![
                d(b(0., 0., 10., 10., 0), 0.9),
                d(b(20., 0., 120., 75., 1), 0.8),
                d(b(50., 50., 60., 60., 0), 0.4),
            ],
        };
        let bimg = ImageDetections { truth: vec![b(0., 0., 10., 10., 0)], predictions: vec![] };
        let m = detection_metrics(&[a, bimg], 3, 0.5);
        assert_eq!(m.support, vec![2, 1, 0]);
        assert!(close(m.ap50[0].unwrap(), 51.0 / 101.0), "{:?}", m.ap50);
        assert!(close(m.ap50[1].unwrap(), 1.0));
        assert_eq!(m.ap50[2], None);
        assert!(close(m.map50, (51.0 / 101.0 + 1.0) / 2.0));
        assert!(close(m.ap50_95[1].unwrap(), 0.6), "{:?}", m.ap50_95);
        assert!(close(m.map50_95, (51.0 / 101.0 + 0.6) / 2.0));
        assert!(close(m.precision_all, 1.0) && close(m.recall_all, 2.0 / 3.0));
        assert!(close(m.recall[0], 0.5) && close(m.precision[1], 1.0));
        assert_eq!(m.image_errors, vec![0, 1]);
        // At score threshold 0.3 the stray 0.4 box counts: precision 2/3 and one more error in image A.
        let m = detection_metrics(
            &[ImageDetections {
                truth: vec![b(0., 0., 10., 10., 0)],
                predictions: vec![d(b(0., 0., 10., 10., 0), 0.9), d(b(50., 50., 60., 60., 0), 0.4)],
            }],
            1,
            0.3,
        );
        assert!(close(m.precision_all, 0.5) && close(m.recall_all, 1.0));
        assert_eq!(m.image_errors, vec![1]);
    }

    #[test]
    fn thresholds_are_exact() {
        let t = coco_iou_thresholds();
        assert_eq!(t[0], 0.5);
        assert_eq!(t[5], 0.75);
        assert_eq!(t[9], 0.95);
    }
}
