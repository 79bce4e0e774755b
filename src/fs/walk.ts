/** Walking a directory tree in a stable order, without following symbolic links. */
import { lstatSync, readdirSync, type Stats } from "node:fs";
import { join } from "node:path";

/**
 * Visit every entry under `root` depth first, names sorted, as tree paths ("/a/b") with their
 * lstat; directories are entered after their own visit. `skip` leaves a path (and what is under
 * it) out. A directory that cannot be read is passed over.
 */
export function walkTree(
  root: string,
  visit: (path: string, stat: Stats) => void,
  skip: (path: string) => boolean = () => false,
): void {
  const enter = (relative: string) => {
    let names: string[];
    try {
      names = readdirSync(join(root, relative));
    } catch {
      return;
    }
    for (const name of names.sort()) {
      const path = `${relative}/${name}`;
      if (skip(path)) continue;
      const stat = lstatSync(join(root, path));
      visit(path, stat);
      if (stat.isDirectory()) enter(path);
    }
  };
  enter("");
}

/** What is at `path`, a link itself rather than what it points to; undefined when nothing is. */
export function entryAt(path: string): Stats | undefined {
  try {
    return lstatSync(path);
  } catch {
    return undefined;
  }
}

/** Whether anything (a link included) is at `path`. */
export const entryExists = (path: string): boolean => entryAt(path) !== undefined;
