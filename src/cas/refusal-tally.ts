/**
 * What strangers can cost the audit log. Every decision is audited, but a refusal of someone the
 * CAS knows nothing of — a runtime whose nonce or evidence failed before it was shown bound to
 * it, an identity that was never granted anything — is free to repeat: 18,509 made-up
 * attestations in 30 s once made 18,509 rows. So such refusals are tallied instead: the first of
 * each kind in an interval is written as it happens, the rest are counted and written as one
 * entry when the interval ends ("refused 18,508 more times like this …"). A kind is a source (an
 * address, or an identity, the caller's), an action and an error code. The tally holds at most
 * MAX_KINDS kinds at once; refusals of further kinds in the interval are counted under one
 * overflow kind. So strangers add at most 2 × (MAX_KINDS + 1) rows an interval, however many
 * requests they send, and the tally's memory is bounded the same way.
 */

/** One refusal as the audit log records it. */
export interface Refusal {
  readonly actor: string;
  readonly action: string;
  readonly target: string;
  readonly hash: string | null;
  readonly reason: string;
  /**
   * "granted": a decision for a stranger that is not a refusal — a configuration handed out for
   * a policy in mode none, which anyone may ask for, as often as they like. Tallied the same way.
   */
  readonly outcome?: "granted";
}

export const TALLY_INTERVAL_MS = 60_000;
/**
 * 100: each kind costs at most two rows an interval, so strangers from any number of addresses
 * add at most 202 rows a minute; an operator reading the log still sees the first of 100
 * different refusals each minute, which is more than anyone reads.
 */
export const MAX_KINDS = 100;

interface Kind {
  readonly source: string;
  readonly first: Refusal;
  readonly since: Date;
  more: number;
  readonly targets: Set<string>;
}

/** Distinct targets remembered per kind, at most (to say "to N targets"). */
const MAX_TARGETS = 100;
const OVERFLOW = "\0overflow";

export class RefusalTally {
  readonly #write: (refusal: Refusal) => void;
  readonly #now: () => Date;
  readonly #intervalMs: number;
  readonly #maxKinds: number;
  #kinds = new Map<string, Kind>();
  #timer: NodeJS.Timeout | undefined;

  /** `write`: appends one refusal to the audit log. */
  constructor(
    write: (refusal: Refusal) => void,
    options: { now?: () => Date; intervalMs?: number; maxKinds?: number } = {},
  ) {
    this.#write = write;
    this.#now = options.now ?? (() => new Date());
    this.#intervalMs = options.intervalMs ?? TALLY_INTERVAL_MS;
    this.#maxKinds = options.maxKinds ?? MAX_KINDS;
  }

  /**
   * A stranger's refusal, from `source` (an address, or the caller's identity), of kind `code`.
   * Written now if it is the first of its kind this interval, else counted.
   */
  refuse(source: string, code: string, given: Refusal): void {
    let refusal = given;
    let key = `${source}\0${refusal.action}\0${code}`;
    let kind = this.#kinds.get(key);
    if (!kind && this.#kinds.size >= this.#maxKinds) {
      key = OVERFLOW;
      kind = this.#kinds.get(key);
      source = "other sources";
    }
    if (kind) {
      kind.more++;
      if (kind.targets.size < MAX_TARGETS) kind.targets.add(refusal.target);
      return;
    }
    // The overflow counts every kind and source: its entries name no caller, action or target.
    if (key === OVERFLOW) refusal = { actor: "", action: "refusals", target: "", hash: null, reason: refusal.reason };
    this.#kinds.set(key, { source, first: refusal, since: this.#now(), more: 0, targets: new Set([refusal.target]) });
    this.#write(
      key === OVERFLOW
        ? { ...refusal, reason: `${refusal.reason} (more kinds of refusal than the tally keeps: counted together)` }
        : refusal,
    );
    if (!this.#timer) {
      this.#timer = setTimeout(() => this.flush(), this.#intervalMs);
      this.#timer.unref();
    }
  }

  /** The interval ends: one entry for each kind refused again since its first, then a new interval. */
  flush(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    const kinds = this.#kinds;
    this.#kinds = new Map();
    const until = this.#now().toISOString();
    for (const kind of kinds.values()) {
      if (kind.more === 0) continue;
      const targets =
        kind.targets.size > 1
          ? `, to ${kind.targets.size}${kind.targets.size >= MAX_TARGETS ? " or more" : ""} targets`
          : "";
      this.#write({
        ...kind.first,
        // Counted for several targets: charged to none of them (their readers would see it).
        ...(kind.targets.size > 1 ? { target: "", hash: null } : {}),
        reason: `${kind.first.outcome ?? "refused"} ${kind.more} more time${kind.more === 1 ? "" : "s"} like this from ${kind.source} between ${kind.since.toISOString()} and ${until}${targets}; the first: ${kind.first.reason}`,
      });
    }
  }

  /** Kinds tallied now (for tests). */
  get size(): number {
    return this.#kinds.size;
  }
}
