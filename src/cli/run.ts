/** `cloister run`: attest, receive the configuration, start the program as the policy says. */
import { spawnSync } from "node:child_process";
import type { KeyObject } from "node:crypto";
import { getCompileCacheDir } from "node:module";
import { join, resolve } from "node:path";
import { type Command, Option } from "commander";
import { selectProvider } from "../attestation/providers/detect.ts";
import { ProviderError } from "../attestation/providers/provider.ts";
import { CasClient, CasPinError, CasRequestError, CasUnreachableError } from "../client/cas-client.ts";
import { cloisterHome } from "../identity/store.ts";
import type { Configuration } from "../protocol/attestation.ts";
import { CasAnswerError, obtainConfiguration } from "../runtime/attest-client.ts";
import { inNamespace, type Launch, LaunchError, planLaunch, startLaunch } from "../runtime/launcher.ts";
import { type RunningShields, startShields } from "../runtime/tls-shield.ts";
import type { VolumeLaunchInput } from "../runtime/volume-launcher.ts";
import { casKeyOf, DEFAULT_CAS, unreachableMessage } from "./connection.ts";
import { CliError, UsageError } from "./errors.ts";
import type { Io } from "./io.ts";
import { findProgram } from "./process.ts";

export function runCommand(program: Command, io: Io): void {
  program
    .command("run")
    .description("attest, then run the policy's program with its secrets, files and environment")
    .option("--config-id <policy/service>", "the service to run (env CLOISTER_CONFIG_ID)")
    .addOption(
      new Option("--tee <tee>", "where the evidence comes from")
        .choices(["auto", "sgx", "tdx", "snp", "sim"])
        .default("auto"),
    )
    .option("--cas <url>", `CAS address (env CLOISTER_CAS_ADDR; default ${DEFAULT_CAS})`)
    .option("--cas-key <hash>", "the CAS key hash to pin (env CLOISTER_CAS_KEY)")
    .option("--las <url>", "LAS address for --tee sim (env CLOISTER_LAS_ADDR)")
    .option(
      "--volumes <dir>",
      "where volumes' protected trees live, as DIR/POLICY/VOLUME (env CLOISTER_VOLUMES_DIR; default $CLOISTER_HOME/volumes)",
    )
    .argument("[program...]", "with --tee sim: the program the LAS measures (the policy's argv is what runs)")
    .addHelpText(
      "after",
      `
The program's argv, environment and working directory are the policy's; the host's are
ignored. Files exist only in a private mount namespace (for a non-root user, inside a user
namespace of its own, where the program runs as that namespace's root); the policy's
TLS shield runs here, up before the program starts. Exit code:
the program's; 1 with one line saying why when it was never started; 2 for a usage error.`,
    )
    .action(
      async (
        programArgs: string[],
        opts: { configId?: string; tee: string; cas?: string; casKey?: string; las?: string; volumes?: string },
      ) => {
        const configId = opts.configId ?? io.env.CLOISTER_CONFIG_ID;
        if (!configId) throw new UsageError("which service? --config-id POLICY/SERVICE or CLOISTER_CONFIG_ID");
        // The LAS measures the file it is given; the policy's argv is what runs (checked below).
        if (opts.tee === "sim" && programArgs.length === 0)
          throw new UsageError(
            `--tee sim measures the program you start: give the program after --: cloister run --config-id ${configId} --tee sim -- /usr/bin/redis-server (the file the policy's command runs)`,
          );
        const url = opts.cas ?? io.env.CLOISTER_CAS_ADDR ?? DEFAULT_CAS;
        const pin = casKeyOf(opts.casKey, io.env);
        if (!pin) throw new CliError("the CAS must be pinned: --cas-key HASH or CLOISTER_CAS_KEY");
        const namespace = namespaceArgs();
        const measured = programArgs[0] ? await findProgram(programArgs[0], io) : undefined;
        let config: Configuration;
        let serviceKey: KeyObject;
        try {
          const provider = await selectProvider({
            tee: opts.tee as "auto",
            lasUrl: opts.las ?? io.env.CLOISTER_LAS_ADDR,
            program: measured,
          });
          // One client: the challenge and the attestation share its (pinned) connection, which
          // is closed once the configuration is in, not left open while the program runs.
          const cas = new CasClient({ url, casKey: pin });
          try {
            ({ configuration: config, key: serviceKey } = await obtainConfiguration(cas, configId, provider));
          } finally {
            cas.close();
          }
        } catch (error) {
          if (error instanceof CasRequestError) throw new CliError(refusal(error, opts.tee, configId));
          if (error instanceof CasUnreachableError) throw new CliError(unreachableMessage(error));
          if (error instanceof ProviderError || error instanceof CasPinError || error instanceof CasAnswerError)
            throw new CliError(error.message);
          throw error;
        }
        // In simulation the LAS measured one file: the policy's program must be that file, found
        // as the launcher's shell will find it — from the policy's working directory, on the
        // policy's PATH or, without one, on the shell's own default (never this process's PATH,
        // which the program's environment does not have).
        if (measured) {
          const runs = await findProgram(config.command[0]!, {
            ...io,
            cwd: config.pwd,
            env: { PATH: config.environment.PATH ?? shellDefaultPath() },
          }).catch(() => "");
          if (runs !== measured)
            throw new CliError(`the policy runs ${config.command[0]}, but ${measured} was measured`);
        }
        let launch: Launch;
        try {
          launch =
            config.volumes.length > 0
              ? volumeLaunch(config, namespace, {
                  serviceKeyPem: serviceKey.export({ type: "pkcs8", format: "pem" }).toString(),
                  cas: { url, casKey: pin },
                  volumesDir: resolve(
                    io.cwd,
                    opts.volumes ?? io.env.CLOISTER_VOLUMES_DIR ?? join(cloisterHome(io.env), "volumes"),
                  ),
                })
              : planLaunch(config, namespace);
        } catch (error) {
          if (error instanceof LaunchError) throw new CliError(error.message);
          throw error;
        }
        // The TLS shield is up before the program starts and down after it exits.
        let shields: RunningShields;
        try {
          shields = await startShields(config, {
            serviceKeyPem: serviceKey.export({ type: "pkcs8", format: "pem" }).toString(),
            serviceChainPem: config.certificate_chain,
          });
        } catch (error) {
          throw new CliError(`cannot start the TLS shield: ${(error as Error).message}`);
        }
        const code = await startLaunch(launch).exit.finally(() => shields.close());
        // The program's own exit code is cloister's (an empty message prints nothing).
        if (code !== 0) throw new CliError("", code);
      },
    );
}

/** What /bin/sh (the launcher's shell) searches for a program when its environment has no PATH. */
function shellDefaultPath(): string {
  const shell = spawnSync("/bin/sh", ["-c", 'printf %s "$PATH"'], { env: {}, encoding: "utf8" });
  return shell.status === 0 && shell.stdout
    ? shell.stdout
    : "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
}

/**
 * The CAS's refusal, in the runtime's one line. The CAS answers the runtime in its own terms
 * (what failed); where the usual cause is a setting on this side or in the policy, say what to
 * change: simulated evidence for a policy that accepts only hardware evidence, or from a LAS the
 * CAS does not trust. Recognised by the answer's code and message; anything else is shown as is.
 */
function refusal(error: CasRequestError, tee: string, configId: string): string {
  if (tee !== "sim") return error.message;
  const mode = /simulated evidence, but the policy's attestation mode is (\w+)/.exec(error.message)?.[1];
  if (error.code === "not_allowed" && mode === "hardware")
    return `${configId}: the policy accepts only hardware evidence, and --tee sim gives simulated evidence: set security.attestation.mode: simulation in the policy for development (with a measurement {tee: sim, digest: <cloister measure --tee sim PROGRAM>}), or run in a TEE (--tee auto)`;
  if (error.code === "evidence_refused" && /LAS key \S+ is not enrolled/.test(error.message))
    return `${error.message}: an administrator of the CAS enrols this LAS with cloister cas las enrol KEY (the key cloister las start printed), or use cloister dev, which enrols its own`;
  return error.message;
}

/**
 * How to enter a private mount namespace: as root, directly; as any other user, inside a user
 * namespace of its own where the user is root (`--map-root-user`), so that it may mount the
 * tmpfs and overlays. Checked before attesting, so that no secret is fetched for a start that
 * cannot happen.
 */
function namespaceArgs(): string[] {
  const mountNs = ["--mount", "--propagation", "private"];
  if (process.getuid?.() === 0) return mountNs;
  const userNs = ["--user", "--map-root-user", ...mountNs];
  const probe = spawnSync("unshare", [...userNs, "--", "true"], { encoding: "utf8" });
  if (probe.error || probe.status !== 0) {
    const why = (probe.error?.message ?? probe.stderr).trim().split("\n").at(-1);
    throw new CliError(
      `cloister run as a non-root user needs unprivileged user namespaces, which this host refuses (${why}); run it as root or allow them (sysctl kernel.unprivileged_userns_clone, AppArmor's restrict_unprivileged_userns)`,
    );
  }
  return userNs;
}

const VOLUME_LAUNCHER = join(import.meta.dirname, "..", "runtime", "volume-launcher.ts");

/**
 * Services with volumes start through a Node launcher inside the namespace, which stays to
 * commit what the program wrote (src/runtime/volume-launcher.ts); its input goes on fd 3.
 */
function volumeLaunch(
  config: Configuration,
  namespace: readonly string[],
  rest: Omit<VolumeLaunchInput, "config">,
): Launch {
  const cache = getCompileCacheDir?.();
  return {
    ...inNamespace(namespace, [process.execPath, VOLUME_LAUNCHER, "--cloister-volumes"]),
    supervised: true,
    // The launcher shares the command's compile cache (bin/cloister.js says where and why); the
    // program's own environment is set by the launcher's script, the policy's alone.
    env: { ...(cache ? { NODE_COMPILE_CACHE: cache } : {}), PATH: process.env.PATH ?? "/usr/sbin:/usr/bin:/sbin:/bin" },
    fd3: Buffer.from(JSON.stringify({ config, ...rest } satisfies VolumeLaunchInput)),
  };
}
