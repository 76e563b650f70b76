//! Eigenvalues of small symmetric matrices (cyclic Jacobi rotations), for the
//! shape PCA (3 x 3) and the GLCM's MCC (gray levels x gray levels).

/// Eigenvalues of the symmetric `n x n` row-major matrix `a` (overwritten), unsorted.
pub(crate) fn symmetric_eigenvalues(a: &mut [f64], n: usize) -> Vec<f64> {
    for _sweep in 0..100 {
        let mut off = 0.0;
        let mut diag = 0.0;
        for i in 0..n {
            diag += a[i * n + i] * a[i * n + i];
            for j in (i + 1)..n {
                off += a[i * n + j] * a[i * n + j];
            }
        }
        if off == 0.0 || off <= 1e-32 * diag {
            break;
        }
        for p in 0..n {
            for q in (p + 1)..n {
                let apq = a[p * n + q];
                if apq == 0.0 {
                    continue;
                }
                let (app, aqq) = (a[p * n + p], a[q * n + q]);
                let theta = (aqq - app) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..n {
                    let (akp, akq) = (a[k * n + p], a[k * n + q]);
                    a[k * n + p] = c * akp - s * akq;
                    a[k * n + q] = s * akp + c * akq;
                }
                for k in 0..n {
                    let (apk, aqk) = (a[p * n + k], a[q * n + k]);
                    a[p * n + k] = c * apk - s * aqk;
                    a[q * n + k] = s * apk + c * aqk;
                }
            }
        }
    }
    (0..n).map(|i| a[i * n + i]).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eigenvalues_of_a_known_matrix() {
        // [[2, 1], [1, 2]] has eigenvalues 1 and 3.
        let mut a = vec![2.0, 1.0, 1.0, 2.0];
        let mut e = symmetric_eigenvalues(&mut a, 2);
        e.sort_by(f64::total_cmp);
        assert!((e[0] - 1.0).abs() < 1e-14 && (e[1] - 3.0).abs() < 1e-14);
        // A 3 x 3 with eigenvalues 2 - sqrt(2), 2, 2 + sqrt(2).
        let mut b = vec![2.0, -1.0, 0.0, -1.0, 2.0, -1.0, 0.0, -1.0, 2.0];
        let mut e = symmetric_eigenvalues(&mut b, 3);
        e.sort_by(f64::total_cmp);
        let r = 2f64.sqrt();
        assert!((e[0] - (2.0 - r)).abs() < 1e-14 && (e[1] - 2.0).abs() < 1e-14 && (e[2] - (2.0 + r)).abs() < 1e-14);
    }
}
