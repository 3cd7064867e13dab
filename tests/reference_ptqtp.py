"""Plain float64 NumPy PTQTP (docs/SPEC.md section 1), one group at a time, written for clarity.

Independent of ptqtp.methods.ptqtp: brute-force 9-pair search with np.argmin (first
minimum = pinned tie order), Gram matrices from the codes, explicit 2x2 inverse.
"""

import numpy as np

PAIRS = [(c1, c2) for c1 in (-1, 0, 1) for c2 in (-1, 0, 1)]


def reference_ptqtp(W, G=128, Tmax=50, eps=1e-4, lam0=1e-8, kappa_max=1e12, lam_max=1.0):
    W = np.asarray(W, dtype=np.float64)
    n, d = W.shape
    ng = -(-d // G)
    groups = [(r, g, W[r, g * G : min(d, (g + 1) * G)]) for r in range(n) for g in range(ng)]
    T = [np.stack([np.where(w >= 0, 1.0, -1.0)] * 2) for _, _, w in groups]
    a = [np.array([1.0, 1.0]) for _ in groups]
    lam = [lam0 for _ in groups]
    errors, iterations = [], 0
    for it in range(1, Tmax + 1):
        delta, total = 0.0, 0.0
        for i, (_, _, w) in enumerate(groups):
            S = T[i].T  # width x 2
            A = S.T @ S + lam[i] * np.eye(2)
            Ainv = np.array([[A[1, 1], -A[0, 1]], [-A[1, 0], A[0, 0]]]) / (A[0, 0] * A[1, 1] - A[0, 1] * A[1, 0])
            kappa = np.linalg.norm(A) * np.linalg.norm(Ainv)
            if not kappa < kappa_max:
                lam[i] = min(lam[i] * np.sqrt(kappa / kappa_max), lam_max)
                A = S.T @ S + lam[i] * np.eye(2)
                Ainv = np.array([[A[1, 1], -A[0, 1]], [-A[1, 0], A[0, 0]]]) / (A[0, 0] * A[1, 1] - A[0, 1] * A[1, 0])
            b = S.T @ w
            det = A[0, 0] * A[1, 1] - A[0, 1] * A[1, 0]
            # Cramer's rule, the closed form SPEC names; at init A is nearly singular, so the
            # operation order matters for bit-equality with any other implementation.
            a_new = np.array([(A[1, 1] * b[0] - A[0, 1] * b[1]) / det, (A[0, 0] * b[1] - A[1, 0] * b[0]) / det])
            delta = max(delta, np.abs(a_new - a[i]).max())
            a[i] = a_new
            levels = np.array([a_new[0] * c1 + a_new[1] * c2 for c1, c2 in PAIRS])
            best = np.argmin((w[:, None] - levels[None, :]) ** 2, axis=1)
            T[i] = np.array([[PAIRS[b][0] for b in best], [PAIRS[b][1] for b in best]], dtype=np.float64)
            total += np.sum((w - a_new @ T[i]) ** 2)
        iterations = it
        errors.append(total)
        if delta < eps:
            break
    codes = np.zeros((2, n, ng * G), dtype=np.int8)
    scales = np.zeros((2, n, ng))
    for i, (r, g, w) in enumerate(groups):
        codes[:, r, g * G : g * G + len(w)] = T[i]
        scales[:, r, g] = a[i]
    return codes, scales, iterations, errors
