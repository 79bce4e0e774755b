/** `--output text|json|yaml`, the same for every command. */
import { Option } from "commander";
import { stringify } from "yaml";

export const OUTPUT_FORMATS = ["text", "json", "yaml"] as const;
export type OutputFormat = (typeof OUTPUT_FORMATS)[number];

export const outputOption = () =>
  new Option("-o, --output <format>", "output format").choices(OUTPUT_FORMATS).default("text");

/** Render `data` for machines (json, yaml), or with `text` for people. */
export function render(format: OutputFormat, data: unknown, text: () => string): string {
  switch (format) {
    case "json":
      return `${JSON.stringify(data, null, 2)}\n`;
    case "yaml":
      return stringify(data);
    case "text": {
      const t = text();
      return t.endsWith("\n") ? t : `${t}\n`;
    }
  }
}
