// Randomness is an argument (STYLE.md §1): every core that draws takes a `Rand`, a function
// returning a float in [0, 1). The shell passes Math.random; tests pass a seeded source so a
// failing run replays exactly from its seed (STYLE.md §3, TigerBeetle's simulator).

export type Rand = () => number;

/**
 * A small seeded PRNG (mulberry32). Not cryptographic; good enough for load balancing and
 * simulations, and pure data: the state is the closure's 32-bit counter.
 */
export function seededRand(seed: number): Rand {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** An integer in [0, n). */
export function randInt(rand: Rand, n: number): number {
  const i = Math.floor(rand() * n);
  // A Rand that returns 1.0 would break the bound; clamp rather than index out of range.
  return i >= n ? n - 1 : i;
}
