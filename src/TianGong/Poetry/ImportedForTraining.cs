// Training/Pretraining.cs names the poetry corpus options (PoetryCorpusOptions, PoetryCollections, PoetryForm) that moved
// here from Data/; it is being reworked on another branch, so instead of editing it the namespace is imported project-wide.
// Once Pretraining.cs has `using TianGong.Poetry;`, delete this file.
global using TianGong.Poetry;
