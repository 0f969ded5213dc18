import { describe, expect, it } from 'vitest';
import { runtimeNames } from '../../runtime/src/contract/env.js';
import { loadSettings } from './settings.js';

describe('the runtime image of each runtime', () => {
  it('is eddy/runtime:<runtime> for every runtime name, the Dockerfile’s targets’ tags', () => {
    const { runtimeImages } = loadSettings({});
    expect(Object.keys(runtimeImages).sort()).toEqual([...runtimeNames].sort());
    expect(runtimeImages['python3.11']).toBe('eddy/runtime:python3.11');
    expect(runtimeImages.java17).toBe('eddy/runtime:java17');
    expect(runtimeImages.provided).toBe('eddy/runtime:provided');
    expect(runtimeImages.nodejs22).toBe('eddy/runtime:nodejs22');
  });

  it('follows EDDY_RUNTIME_IMAGE (the chart’s runtimeImage) for every runtime', () => {
    const { runtimeImages } = loadSettings({
      EDDY_RUNTIME_IMAGE: 'registry.example/eddy-runtime:{runtime}-1.2',
    });
    for (const r of runtimeNames) {
      expect(runtimeImages[r]).toBe(`registry.example/eddy-runtime:${r}-1.2`);
    }
  });
});
