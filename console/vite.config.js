// The console is served by kaizen-server from the files this build writes
// to dist/ (--console_dir). Its Content-Security-Policy allows no inline
// script and nothing from elsewhere, so: no module-preload polyfill (an
// inline script), no assets inlined as data: URIs, hashed file names.
import { defineConfig } from 'vite';

export default defineConfig({
  base: '/',
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    modulePreload: { polyfill: false },
    assetsInlineLimit: 0,
    sourcemap: false,
    chunkSizeWarningLimit: 200,
  },
});
