// Build step: copy the API's .proto from the repository's proto/ into the
// package (the client loads it at run time) and generate TypeScript types
// from it into src/gen/. Neither is committed: proto/ is the one source.
import { execFileSync } from "node:child_process";
import { copyFileSync, existsSync, mkdirSync, rmSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const source = resolve(here, "../../proto/palisade/v1/palisade.proto");
const target = join(here, "proto/palisade/v1/palisade.proto");

if (existsSync(source)) {
  mkdirSync(dirname(target), { recursive: true });
  copyFileSync(source, target);
} else if (!existsSync(target)) {
  throw new Error(`${source}: no such file, and no copy in ${target}`);
}

const require = createRequire(import.meta.url);
const genTypes = join(dirname(require.resolve("@grpc/proto-loader/package.json")), "build/bin/proto-loader-gen-types.js");
const out = join(here, "src/gen");
rmSync(out, { recursive: true, force: true });
execFileSync(
  process.execPath,
  [
    genTypes,
    "--grpcLib=@grpc/grpc-js",
    "--longs=Number",
    "--enums=String",
    "--defaults",
    "--oneofs",
    "--includeComments",
    "--importFileExtension=.js",
    `--outDir=${out}`,
    `-I${join(here, "proto")}`,
    "palisade/v1/palisade.proto",
  ],
  { stdio: "inherit" },
);
