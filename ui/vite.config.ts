/// <reference types="vitest/config" />
import { defineConfig } from 'vite';
import react from '@vitejs/plugin-react';

// Address of a locally running `bramble serve` for `npm run dev`.
// Override with BRAMBLE_DEV_API=http://host:port when it listens elsewhere.
const apiTarget = process.env.BRAMBLE_DEV_API ?? 'http://127.0.0.1:3180';

export default defineConfig({
  // Relative asset paths: the same dist/ is bundled into the desktop shell
  // and served by the Rust server at `/`.
  base: './',
  plugins: [react()],
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    target: 'es2022',
    chunkSizeWarningLimit: 400,
  },
  server: {
    host: '127.0.0.1',
    port: 5173,
    strictPort: true,
    proxy: {
      '/health': apiTarget,
      '/api': apiTarget,
    },
  },
  test: {
    environment: 'jsdom',
    include: ['src/**/*.test.{ts,tsx}'],
    setupFiles: ['src/test/setup.ts'],
    restoreMocks: true,
    unstubGlobals: true,
  },
});
