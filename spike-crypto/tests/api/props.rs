//! Property tests: seal/open and split/combine over random inputs.

use proptest::prelude::*;
use spike_crypto::{CryptoError, RecordCipher, RootKey, SubKey, combine, split};

proptest! {
    #[test]
    fn seal_open_roundtrip(
        key in any::<[u8; 32]>(),
        aad in proptest::collection::vec(any::<u8>(), 0..64),
        plaintext in proptest::collection::vec(any::<u8>(), 0..512),
        flip in any::<prop::sample::Index>(),
    ) {
        let cipher = RecordCipher::new(&SubKey::from_bytes(key));
        let sealed = cipher.seal(&aad, &plaintext).unwrap();
        let opened = cipher.open(&aad, &sealed).unwrap();
        prop_assert_eq!(opened.as_slice(), plaintext.as_slice());

        let mut tampered = sealed.clone();
        let i = flip.index(tampered.len());
        tampered[i] ^= 0x20;
        prop_assert!(matches!(cipher.open(&aad, &tampered), Err(CryptoError::Authentication)));
    }

    #[test]
    fn split_combine_roundtrip(
        key in any::<[u8; 32]>(),
        threshold in 1u8..=5,
        extra in 0u8..=2,
        order in Just(()).prop_perturb(|(), mut rng| {
            let mut ids: Vec<usize> = (0..7).collect();
            // Fisher–Yates with proptest's (reproducible) RNG.
            for i in (1..ids.len()).rev() {
                ids.swap(i, rng.random_range(0..=i));
            }
            ids
        }),
    ) {
        let root = RootKey::from_bytes(key);
        prop_assume!(root.is_ok());
        let root = root.unwrap();
        let shares = split(&root, threshold, threshold + extra).unwrap();
        prop_assert_eq!(shares.len(), usize::from(threshold + extra));

        // A random subset of exactly `threshold` shares, in random order.
        let chosen: Vec<_> = order
            .iter()
            .filter(|&&i| i < shares.len())
            .take(usize::from(threshold))
            .map(|&i| shares[i].try_clone())
            .collect();
        let rebuilt = combine(&chosen).unwrap();
        prop_assert_eq!(rebuilt.expose_secret(), root.expose_secret());
        let rebuilt = combine(&shares).unwrap();
        prop_assert_eq!(rebuilt.expose_secret(), root.expose_secret());
        if threshold >= 2 {
            let short = combine(&chosen[1..]).unwrap();
            prop_assert_ne!(short.expose_secret(), root.expose_secret());
        }
    }
}
