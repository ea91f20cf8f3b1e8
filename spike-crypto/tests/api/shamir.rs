//! Shamir split/combine, including an independent check with plain P-256
//! scalar arithmetic and hand-computed vectors pinning `id = x`.

use p256::Scalar;
use p256::elliptic_curve::ff::PrimeField;
use spike_crypto::{CryptoError, KeyCheckValue, RootKey, Share, combine, split};

use crate::{ROOT_HEX, bytes32};

fn root() -> RootKey {
    RootKey::from_bytes(bytes32(ROOT_HEX)).unwrap()
}

fn clones(shares: &[&Share]) -> Vec<Share> {
    shares.iter().map(|s| s.try_clone()).collect()
}

fn scalar(bytes: &[u8; 32]) -> Scalar {
    Option::from(Scalar::from_repr((*bytes).into())).unwrap()
}

/// Lagrange interpolation at `x` through `points`, computed here, not by
/// the crate under test.
fn interpolate(points: &[(Scalar, Scalar)], x: Scalar) -> Scalar {
    let mut sum = Scalar::ZERO;
    for (i, (xi, yi)) in points.iter().enumerate() {
        let mut basis = Scalar::ONE;
        for (j, (xj, _)) in points.iter().enumerate() {
            if i != j {
                basis *= (x - xj) * Option::<Scalar>::from((*xi - xj).invert()).unwrap();
            }
        }
        sum += *yi * basis;
    }
    sum
}

/// All subsets of `items` of size `k`.
fn subsets<T: Copy>(items: &[T], k: usize) -> Vec<Vec<T>> {
    if k == 0 {
        return vec![vec![]];
    }
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        for mut rest in subsets(&items[i + 1..], k - 1) {
            rest.insert(0, *item);
            out.push(rest);
        }
    }
    out
}

#[test]
fn two_of_three_every_pair_and_the_triple() {
    let root = root();
    let shares = split(&root, 2, 3).unwrap();
    assert_eq!(shares.iter().map(Share::id).collect::<Vec<_>>(), [1, 2, 3]);
    let refs: Vec<&Share> = shares.iter().collect();
    for k in [2, 3] {
        for subset in subsets(&refs, k) {
            let rebuilt = combine(&clones(&subset)).unwrap();
            assert_eq!(rebuilt.expose_secret(), root.expose_secret());
        }
    }
    // Order does not matter.
    let rebuilt = combine(&clones(&[refs[2], refs[0]])).unwrap();
    assert_eq!(rebuilt.expose_secret(), root.expose_secret());
}

#[test]
fn fewer_than_threshold_gives_a_wrong_key_that_the_kcv_catches() {
    let root = RootKey::generate();
    let kcv = KeyCheckValue::compute(&root);
    let shares = split(&root, 2, 3).unwrap();
    for share in &shares {
        let wrong = combine(&[share.try_clone()]).unwrap();
        assert_ne!(wrong.expose_secret(), root.expose_secret());
        assert!(!kcv.matches(&wrong));
    }
    let shares = split(&root, 3, 5).unwrap();
    let refs: Vec<&Share> = shares.iter().collect();
    for pair in subsets(&refs, 2) {
        let wrong = combine(&clones(&pair)).unwrap();
        assert!(!kcv.matches(&wrong));
    }
}

#[test]
fn three_of_five_all_ten_subsets() {
    let root = RootKey::generate();
    let shares = split(&root, 3, 5).unwrap();
    let refs: Vec<&Share> = shares.iter().collect();
    let triples = subsets(&refs, 3);
    assert_eq!(triples.len(), 10);
    for subset in triples {
        assert_eq!(
            combine(&clones(&subset)).unwrap().expose_secret(),
            root.expose_secret()
        );
    }
    for k in [4, 5] {
        for subset in subsets(&refs, k) {
            assert_eq!(
                combine(&clones(&subset)).unwrap().expose_secret(),
                root.expose_secret()
            );
        }
    }
}

#[test]
fn threshold_one_every_share_is_the_key() {
    let root = RootKey::generate();
    let shares = split(&root, 1, 3).unwrap();
    for share in &shares {
        assert_eq!(share.value(), root.expose_secret());
        assert_eq!(
            combine(&[share.try_clone()]).unwrap().expose_secret(),
            root.expose_secret()
        );
    }
    assert_eq!(
        combine(&shares).unwrap().expose_secret(),
        root.expose_secret()
    );
}

/// Independent of the crate's own interpolation: the shares lie on one
/// polynomial of degree `t - 1` at `x = id`, whose value at 0 is the root.
#[test]
fn shares_lie_on_a_degree_t_minus_1_polynomial_through_the_root() {
    for (t, n) in [(1u8, 1u8), (1, 4), (2, 2), (2, 3), (3, 5), (5, 7), (4, 255)] {
        let root = RootKey::generate();
        let shares = split(&root, t, n).unwrap();
        assert_eq!(shares.len(), usize::from(n));
        let points: Vec<(Scalar, Scalar)> = shares
            .iter()
            .enumerate()
            .map(|(i, s)| {
                assert_eq!(usize::from(s.id()), i + 1, "ids are 1..=n in order");
                (Scalar::from(u64::from(s.id())), scalar(s.value()))
            })
            .collect();
        let basis = &points[..usize::from(t)];
        assert_eq!(
            interpolate(basis, Scalar::ZERO),
            scalar(root.expose_secret()),
            "t={t} n={n}"
        );
        for (x, y) in &points[usize::from(t)..] {
            assert_eq!(
                interpolate(basis, *x),
                *y,
                "t={t} n={n}: share off the polynomial"
            );
        }
        if t >= 2 {
            // Degree exactly t - 1 (with overwhelming probability): t - 1
            // points do not determine the others.
            let short = &points[..usize::from(t) - 1];
            assert_ne!(
                interpolate(short, Scalar::ZERO),
                scalar(root.expose_secret())
            );
        }
    }
}

/// Hand-made shares pin the convention share(id) = f(x = id).
/// f(x) = r - x (coefficient n - 1 = -1): f(1) = r - 1, f(2) = r - 2.
#[test]
fn known_answer_linear_minus_one() {
    let r = "0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    let shares = [
        Share::new(1, bytes32(&format!("{r}1f"))).unwrap(),
        Share::new(2, bytes32(&format!("{r}1e"))).unwrap(),
    ];
    assert_eq!(
        combine(&shares).unwrap().expose_secret(),
        &bytes32(ROOT_HEX)
    );
}

/// f(x) = r + c·x mod n and f(x) = r + c·x + d·x² mod n, values computed
/// independently (Python big integers), with reductions mod n.
#[test]
fn known_answer_vectors_with_modular_wraparound() {
    // c = 0xeeeeeeee00000000eeee…ee
    let linear = [
        (
            1,
            "eff0f1f205060708f7f8f9fafbfcfdff000102030405060708090a0b0c0d0e0e",
        ),
        (
            2,
            "dedfe0e105060708e6e7e8e9eaebecee3208f6444bdc5671033e2e36fe98d7ab",
        ),
        (
            3,
            "cdcecfd005060708d5d6d7d8d9dadbdd6410ea8593b3a6dafe735262f124a148",
        ),
    ];
    // d = 0x5555…55
    let quadratic = [
        (
            1,
            "454647485a5b5c5d4d4e4f5051525354986f5caab242bcd769a4949d64ff3e12",
        ),
        (
            2,
            "343536385a5b5c5c3c3d3e3f404142440d90563e53026ebc711fee065b27e25d",
        ),
        (
            3,
            "cdcecfd305060705d5d6d7d8d9dadbde2d5bfa7c9e6ccb4c2345f219fbfb3152",
        ),
        (
            4,
            "1213141a5a5b5c581a1b1c1d1e1f20237e04540a4652957c98a30b524eb2e04f",
        ),
        (
            5,
            "0102030c5a5b5c55090a0b0c0d0e0f137957584298e30a57b8aacf354c1539f6",
        ),
    ];
    let make = |v: &[(u8, &str)]| -> Vec<Share> {
        v.iter()
            .map(|(id, hex)| Share::new(*id, bytes32(hex)).unwrap())
            .collect()
    };
    let linear = make(&linear);
    let quadratic = make(&quadratic);
    let root = bytes32(ROOT_HEX);

    for pair in subsets(&linear.iter().collect::<Vec<_>>(), 2) {
        assert_eq!(combine(&clones(&pair)).unwrap().expose_secret(), &root);
    }
    let refs: Vec<&Share> = quadratic.iter().collect();
    for triple in subsets(&refs, 3) {
        assert_eq!(combine(&clones(&triple)).unwrap().expose_secret(), &root);
    }
    for pair in subsets(&refs, 2) {
        assert_ne!(combine(&clones(&pair)).unwrap().expose_secret(), &root);
    }
}

#[test]
fn bad_parameters_are_refused() {
    let root = root();
    for (t, n) in [(0, 0), (0, 3), (1, 0), (4, 3), (255, 254)] {
        assert!(
            matches!(
                split(&root, t, n),
                Err(CryptoError::InvalidThreshold { threshold, shares }) if threshold == t && shares == n
            ),
            "t={t} n={n}"
        );
    }
    assert_eq!(split(&root, 1, 1).unwrap().len(), 1);
}

#[test]
fn combine_refuses_empty_and_duplicate_ids() {
    assert!(matches!(
        combine(&[]),
        Err(CryptoError::NotEnoughShares { have: 0, need: 1 })
    ));
    let shares = split(&root(), 2, 3).unwrap();
    let dup = clones(&[&shares[0], &shares[1], &shares[0]]);
    assert!(matches!(combine(&dup), Err(CryptoError::DuplicateShare(1))));
    // Same id, different value: still a duplicate.
    let other = split(&RootKey::generate(), 2, 3).unwrap();
    let mixed = clones(&[&shares[1], &other[1]]);
    assert!(matches!(
        combine(&mixed),
        Err(CryptoError::DuplicateShare(2))
    ));
}

#[test]
fn splits_are_deterministic_per_key_and_threshold() {
    let root = RootKey::generate();
    let kcv = KeyCheckValue::compute(&root);
    let a = split(&root, 2, 3).unwrap();
    let b = split(&root, 2, 3).unwrap();
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x.value(), y.value(), "same key and threshold, same shares");
    }
    // So shares of two splits recombine (a re-seeded Keeper's share mixes
    // with the others).
    let mixed = combine(&[a[0].try_clone(), b[1].try_clone()]).unwrap();
    assert!(kcv.matches(&mixed));
    // Another key or another threshold gives another polynomial.
    let other = split(&RootKey::generate(), 2, 3).unwrap();
    assert_ne!(a[0].value(), other[0].value());
    let three = split(&root, 3, 3).unwrap();
    assert_ne!(a[0].value(), three[0].value());
    let cross = combine(&[a[0].try_clone(), other[1].try_clone()]).unwrap();
    assert!(!kcv.matches(&cross));
}

#[test]
fn share_new_validates() {
    let n = bytes32(crate::ORDER_HEX);
    let mut n_minus_1 = n;
    n_minus_1[31] -= 1;
    assert!(Share::new(1, n_minus_1).is_ok());
    assert!(Share::new(255, [1; 32]).is_ok());
    for (id, value) in [(0, [1; 32]), (1, n), (1, [0xff; 32]), (1, [0; 32])] {
        assert!(matches!(
            Share::new(id, value),
            Err(CryptoError::InvalidShare(_))
        ));
    }
    let share = Share::new(7, [3; 32]).unwrap();
    let copy = share.try_clone();
    assert_eq!((copy.id(), copy.value()), (7, &[3; 32]));
}
