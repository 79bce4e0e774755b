/**
 * The volume commit's wire types (DESIGN.md §7), shared by its two ends: the runtime
 * (src/runtime/volume-launcher.ts), which asks the CAS to move a volume's tag from the state it
 * started from to the one it wrote, and the CAS (src/cas/api.ts's commitVolume route), which
 * checks the request and compares-and-swaps. Zod schemas, types inferred.
 *
 *   POST /v1/volumes/:policy/:volume/tag  VolumeCommitRequest → VolumeCommitResponse
 */
import { z } from "zod";

const Tag = z.string().regex(/^[0-9a-f]{64}$/, "a tag: 64 lower-case hex digits");

export const VolumeParams = z.strictObject({ policy: z.string().min(1).max(1024), volume: z.string().min(1).max(128) });
export type VolumeParams = z.output<typeof VolumeParams>;

export const VolumeCommitRequest = z.strictObject({
  previous: Tag.nullable().describe("the tag the runtime started from; null for a fresh volume"),
  next: Tag.describe("the tag of the state the runtime wrote"),
});
export type VolumeCommitRequest = z.output<typeof VolumeCommitRequest>;

export const VolumeCommitResponse = z.strictObject({ policy: z.string(), volume: z.string(), tag: z.string() });
export type VolumeCommitResponse = z.output<typeof VolumeCommitResponse>;
