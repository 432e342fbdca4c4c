#!/usr/bin/env node
// The CLI is bundled into one file so start-up loads a single module.
import '../dist/pvmlab.mjs';
