import { fileURLToPath } from "node:url";
import { defineConfig } from "vite";
import react from "@vitejs/plugin-react";

// The build goes into the builder app's static folder (git-ignored), where
// runserver and collectstatic find it; Django reads .vite/manifest.json to
// link the hashed files (apps/builder/views.py).
export default defineConfig({
  plugins: [react()],
  base: "./",
  build: {
    outDir: fileURLToPath(new URL("../static/builder/dist", import.meta.url)),
    emptyOutDir: true,
    manifest: true,
    sourcemap: true,
    rollupOptions: { input: "src/main.jsx" },
  },
});
