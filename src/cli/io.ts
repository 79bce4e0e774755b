/** What a command may touch of the process: injected so that tests run commands in-process. */
export interface Io {
  readonly env: NodeJS.ProcessEnv;
  readonly cwd: string;
  stdout(text: string): void;
  stderr(text: string): void;
}

export const processIo: Io = {
  env: process.env,
  cwd: process.cwd(),
  stdout: (text) => process.stdout.write(text),
  stderr: (text) => process.stderr.write(text),
};
