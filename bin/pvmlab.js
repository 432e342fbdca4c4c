#!/usr/bin/env node
// The CLI is bundled (dist/bundle) so start-up loads a few modules, not hundreds.
import '../dist/bundle/pvmlab.mjs';
